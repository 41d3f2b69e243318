"""tools/pretrain_cls.py --num-gpus 2 on the CPU: two gloo processes, DDP and naiveSyncBN,
which must train as one process does on the same batches, and BN."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from resnext_det.checkpoint import read_weights
from resnext_det.classification import build_cls_model, main
from resnext_det.utils.plots import read_metrics
from resnext_det.utils.testing import max_rel_error, randomize_norms_
from tests.helpers import weight_changes

from .helpers import by_hand_val_metrics, cls_args, tiny_cfg, tiny_opts, write_folder

ROOT = Path(__file__).resolve().parents[2]
# 64 px crops (of the 16 px pictures): res5 is 2x2, so each norm averages 16 values or more
# per batch of 4. At 16 px (res4 and res5 1x1, 4 values) the training is chaotic: a 1e-7
# change of the weights changed the second step's gradients by 1%, and two equal runs' weight
# changes by 17% after 4 steps. lr 0.01 moves the weights by up to 0.03 in 4 steps.
WELL_CONDITIONED = ["INPUT.TRAIN_SIZE", 64, "INPUT.TEST_RESIZE", 64, "INPUT.TEST_CROP", 64,
                    "SOLVER.BASE_LR", 0.01, "SOLVER.REFERENCE_BATCH", 4]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-process training from random weights (every norm random too, so that every
    tensor moves): its opts but OUTPUT_DIR, data folder, output folder, starting weights."""
    tmp = tmp_path_factory.mktemp("ddp")
    folder = write_folder(tmp / "data")
    start = tmp / "start.pth"
    torch.manual_seed(0)
    net = randomize_norms_(build_cls_model(tiny_cfg(folder, tmp), num_classes=3))
    torch.save({"model": net.state_dict()}, start)
    opts = ["MODEL.RESNETS.NORM", "naiveSyncBN", "SOLVER.MAX_EPOCHS", 1, *WELL_CONDITIONED,
            "MODEL.WEIGHTS", start]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two processes share the two cores
    cmd = [sys.executable, str(ROOT / "tools/pretrain_cls.py"), "--num-gpus", "2",
           "--dist-url", "auto", *tiny_opts(folder, tmp / "two", *opts)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return SimpleNamespace(opts=opts, data=folder, out=tmp / "two",
                           start=read_weights(start).obj["model"])


def test_two_cpu_processes(run):
    out = run.out
    # 18 images / 4 per iteration (2 per process): round(4.5) = 4 iterations; val 3 + 3 images
    last = read_metrics(out / "metrics.json")[-1]
    assert last["iteration"] == 4 and last["val/images"] == 6
    final = read_weights(out / "model_final.pth").obj
    assert final["iteration"] == 3 and len(final["rng"]) == 2
    assert (out / "log.txt.rank1").is_file()


def test_two_processes_train_as_one(run, tmp_path):
    """DDP averages the two processes' gradients of their cross-entropy means over 2 images,
    naiveSyncBN averages their 2-image statistics: with the stream split as r, r + 2, ...
    and each image's crop and flip seeded by its place in the stream, the two processes
    compute the one-process gradients of the same 4 images per step, 4 steps, the same lr.
    (naiveSyncBN's running variances differ, by (N - 1) / N, N = 4 x H x W: 1/16 in res5.)"""
    main(cls_args(tiny_opts(run.data, tmp_path / "one", *run.opts)))
    one = read_weights(tmp_path / "one/model_final.pth").obj["model"]
    two = read_weights(run.out / "model_final.pth").obj["model"]
    start = run.start
    expected = weight_changes(one, start)
    # the check means something: training moved the weights far past float32's rounding
    assert expected["parameters"].abs().max() > 1e-3 * max(v.abs().max() for v in start.values())
    assert max_rel_error(weight_changes(two, start), expected) < 1e-4  # measured: 2e-6


def test_two_processes_report_the_saved_models_errors(tmp_path):
    """NORM "BN" (per-process statistics): each process evaluated its share of the validation
    images with its own running statistics, the checkpoint holds the main process's, so the
    errors and loss reported were of no saved model. The reference: model_final.pth's
    weights on the validation images through torchvision's transforms, by hand."""
    folder = write_folder(tmp_path / "data")
    out = tmp_path / "out"
    opts = tiny_opts(folder, out, "MODEL.RESNETS.NORM", "BN", "SOLVER.MAX_EPOCHS", 1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "tools/pretrain_cls.py"), "--num-gpus", "2",
           "--dist-url", "auto", *opts]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reported = read_metrics(out / "metrics.json")[-1]
    expected = by_hand_val_metrics(tiny_cfg(folder, tmp_path / "unused"), folder,
                                   out / "model_final.pth")
    assert reported["val/images"] == expected["images"] == 6
    assert reported["val/loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert reported["val/top1_err"] == pytest.approx(expected["top1_err"])
