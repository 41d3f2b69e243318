"""tools/pretrain_cls.py --num-gpus 2 on the CPU: two gloo processes, DDP and naiveSyncBN."""
import os
import subprocess
import sys
from pathlib import Path

from resnext_det.classification.checkpoint import load_checkpoint
from resnext_det.classification.events import read_metrics

from .helpers import tiny_opts, write_folder

ROOT = Path(__file__).resolve().parents[2]


def test_two_cpu_processes(tmp_path):
    folder = write_folder(tmp_path / "data")
    out = tmp_path / "out"
    opts = tiny_opts(folder, out, "MODEL.RESNETS.NORM", "naiveSyncBN", "SOLVER.MAX_EPOCHS", 1)
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two processes share the two cores
    cmd = [sys.executable, str(ROOT / "tools/pretrain_cls.py"), "--num-gpus", "2",
           "--dist-url", "auto", *opts]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    epoch = read_metrics(out, "epoch")[-1]
    # 18 images over 2 processes: 9 each, 2 per batch -> 4 iterations; val 3 + 3 images
    assert epoch["iteration"] == 4 and epoch["val_images"] == 6
    final = load_checkpoint(out / "model_final.pth")
    assert final["iteration"] == 4 and len(final["rng"]) == 2
    assert (out / "log.txt.rank1").is_file()
