"""A kill after a run's last iteration was checkpointed (model_<last>.pth and its pointer
written) and before model_final.pth: --resume has no iteration left to train. It wrote no
model_final.pth, and recorded the final evaluation one iteration later than the run that
was not killed (detectron2's loop is empty, and its `iter += 1` after it counts one more).
The training record of the last iteration, which detectron2 writes after its checkpoints,
was lost.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from resnext_det.checkpoint import read_weights
from tests.classification.helpers import tiny_opts, write_folder
from tests.helpers import training_records

ROOT = Path(__file__).resolve().parents[2]
KILLED_BEFORE = Path(__file__).with_name("killed_before.py")


def _pretrain(out, data, *flags, kill_before=None):
    """tools/pretrain_cls.py, 9 iterations (2 epochs of 4.5), checkpoints every 3: the last
    iteration, 8, writes model_0000008.pth, then model_final.pth; one evaluation, at the end."""
    runner = [str(KILLED_BEFORE), kill_before] if kill_before else []
    cmd = [sys.executable, *runner, str(ROOT / "tools/pretrain_cls.py"), "--num-gpus", "1", *flags,
           *tiny_opts(data, out, "TEST.EVAL_PERIOD", 2)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _evaluations(out):
    """The iterations of metrics.json's evaluation records (val/top1_err)."""
    return [r["iteration"] for r in map(json.loads, (out / "metrics.json").read_text().splitlines())
            if "val/top1_err" in r]


def test_a_resume_after_the_last_checkpoint_writes_model_final(tmp_path):
    data = write_folder(tmp_path / "folder")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _pretrain(whole, data).returncode == 0
    proc = _pretrain(killed, data, kill_before="model_final.pth")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (killed / "model_0000008.pth").is_file() and not (killed / "model_final.pth").exists()
    proc = _pretrain(killed, data, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    final, expected = (read_weights(d / "model_final.pth").obj for d in (killed, whole))
    assert final["iteration"] == expected["iteration"] == 8
    assert final["model"].keys() == expected["model"].keys()
    assert all(torch.equal(final["model"][k], expected["model"][k]) for k in expected["model"])
    assert (killed / "last_checkpoint").read_text() == "model_final.pth"
    assert _evaluations(killed) == _evaluations(whole) == [9]
    assert training_records(killed) == training_records(whole)  # 8's: lost, before
