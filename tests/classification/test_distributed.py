"""tools/pretrain_cls.py --num-gpus 2 on the CPU: two gloo processes, DDP and naiveSyncBN."""
import os
import subprocess
import sys
from pathlib import Path

from resnext_det.checkpoint import read_weights
from resnext_det.utils.plots import read_metrics

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
    # 18 images / 4 per iteration (2 per process): round(4.5) = 4 iterations; val 3 + 3 images
    last = read_metrics(out / "metrics.json")[-1]
    assert last["iteration"] == 4 and last["val/images"] == 6
    final = read_weights(out / "model_final.pth").obj
    assert final["iteration"] == 3 and len(final["rng"]) == 2
    assert (out / "log.txt.rank1").is_file()
