"""Trainings (tools/train_net.py) SIGKILLed after a checkpoint, before what detectron2 does
after it. A run that --resume extends to a larger max_iter (Python and YAML configs: both
end on resume.DropRecordsAfterCheckpoint), killed after the extension's last checkpoint:
just before its model_final.pth, or just before the last_checkpoint that names it. The
next --resume has nothing left to train; it must end as the uninterrupted extension did:
the same model_final.pth, last_checkpoint naming it, the same records in metrics.json, the
final evaluation's detections, and COCO metrics that pycocotools gives on them. And a first
run killed in the evaluation after a checkpoint: its resume records what the uninterrupted
run did up to that checkpoint.

Each run is a forked child running the tool (no second start-up of torch and detectron2);
a killed one SIGKILLs itself just before the rename its test names (atomic_write's last
step). At a first run's other kill points (each checkpoint and pointer, metrics.json, the
final evaluation's renames) --resume already ended with every checkpoint loading and one
final evaluation whole, but a kill between a checkpoint and the metrics.json record of its
iteration lost that record (detectron2 writes it after the checkpoint; now the checkpoint
holds it). detectron2's data order restarts on --resume, so only a resume with no
iteration left is bit-equal to the uninterrupted run.
"""
import json
import os
import shutil
import signal

import pytest
import torch

from tests.engine.test_lazy import DIGITS, TINY_DATA, TINY_MODEL
from tests.engine.test_train_net import CONFIG, TINY
from tests.helpers import load_tool, pycocotools_stats, training_records

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")


def _killing_before(kill):
    """os.replace that SIGKILLs the process just before the rename `kill(name, previous)`
    picks (the target's base name, the one renamed onto before)."""
    replace, previous = os.replace, [None]

    def call(src, dst, *args, **kwargs):
        name = os.path.basename(dst)
        if kill(name, previous[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        previous[0] = name
        return replace(src, dst, *args, **kwargs)
    return call


def _argv(config, out, max_iter, *extra):
    """The digits config at test size, "lazy" (.py) or "yaml", checkpoints every iteration."""
    if config == "lazy":
        return ["--config-file", DIGITS, *TINY_MODEL, *TINY_DATA, f"train.output_dir={out}",
                f"train.max_iter={max_iter}", "train.checkpointer.period=1", *extra]
    return ["--config-file", CONFIG, *map(str, TINY), "OUTPUT_DIR", str(out),
            "SOLVER.MAX_ITER", str(max_iter), "SOLVER.CHECKPOINT_PERIOD", "1"]


def _run(tool, config, out, max_iter, *flags, kill=None, extra=()):
    """tools/train_net.py (flags first, `extra` overrides last) in a forked child; its exit
    status, or -9 when `kill` (see _killing_before) killed it."""
    argv = [*flags, *_argv(config, out, max_iter, *extra)]
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            log = os.open(f"{out}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1), os.dup2(log, 2)
            if kill:
                os.replace = _killing_before(kill)
            tool.run(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _evaluations(out):
    """The iterations of metrics.json's evaluation records (bbox/AP)."""
    return [r["iteration"] for r in map(json.loads, (out / "metrics.json").read_text().splitlines())
            if "bbox/AP" in r]


def _log(out):
    return f"{out}.log:\n" + open(f"{out}.log").read()[-3000:]


@pytest.fixture(scope="module")
def finished(datasets_root, tmp_path_factory):
    """finished(config): a finished training of 3 iterations (model_final.pth: iteration 2)."""
    tool, runs = load_tool("train_net"), {}

    def run(config):
        if config not in runs:
            out = runs[config] = tmp_path_factory.mktemp(config) / "finished"
            assert _run(tool, config, out, 3) == 0, _log(out)
        return tool, runs[config]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETECTRON2_DATASETS", str(datasets_root))
        patch.setenv("OMP_NUM_THREADS", "1")
        yield run


KILLS = {  # where the extension is killed: (target name, the one renamed onto before) -> kill
    "before_model_final": lambda name, previous: name == "model_final.pth",
    "before_its_pointer": lambda name, previous: (name == "last_checkpoint"
                                                  and previous == "model_final.pth"),
}


@pytest.mark.parametrize("config, kill", [("lazy", "before_model_final"),
                                          ("lazy", "before_its_pointer"),
                                          ("yaml", "before_model_final")])
def test_an_extension_killed_after_its_last_checkpoint_resumes_to_its_end(
        finished, datasets_root, tmp_path, monkeypatch, config, kill):
    """Killed before model_final.pth, the resume kept the finished run's model_final.pth
    (iteration 2, not the extension's 4: it only wrote one where none was), and
    last_checkpoint named model_0000004.pth; killed before the pointer, it stayed at
    model_0000004.pth, and the next extension, resumed from there and not from
    model_final.pth, cut the final evaluation's record from metrics.json (a run resumed
    inside its schedule redoes the records from its checkpoint on). Both lost the training
    record of iteration 4, written after the checkpoints."""
    tool, base = finished(config)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for out in (whole, killed):
        shutil.copytree(base, out)
    assert _run(tool, config, whole, 5, "--resume") == 0, _log(whole)
    killed_rc = _run(tool, config, killed, 5, "--resume", kill=KILLS[kill])
    assert killed_rc == -signal.SIGKILL, _log(killed)
    assert (killed / "model_0000004.pth").is_file()
    assert _run(tool, config, killed, 5, "--resume") == 0, _log(killed)

    final, expected = (torch.load(d / "model_final.pth", weights_only=False)
                       for d in (killed, whole))
    assert final["iteration"] == expected["iteration"] == 4
    assert final["model"].keys() == expected["model"].keys()
    assert all(torch.equal(final["model"][k], expected["model"][k]) for k in expected["model"])
    assert (killed / "last_checkpoint").read_text() == "model_final.pth"
    assert _evaluations(killed) == _evaluations(whole) == [3, 5]
    assert training_records(killed) == training_records(whole)  # iteration 4's, the checkpoint's

    gt = datasets_root / "digits/annotations/instances_val.json"
    detections = [json.loads((d / "inference/digits_val/coco_instances_results.json").read_text())
                  for d in (killed, whole)]
    assert detections[0] == detections[1]  # the final evaluation's, of the same model
    stated = json.loads((killed / "inference/digits_val/coco_metrics.json").read_text())["bbox"]
    scored = pycocotools_stats(gt, detections[0])
    assert {k: stated[k] for k in scored} == pytest.approx(scored, abs=1e-6, nan_ok=True)
    assert not [n for n in os.listdir(killed) if ".tmp-" in n]

    assert _run(tool, config, killed, 6, "--resume") == 0, _log(killed)  # extended once more
    assert _evaluations(killed) == [3, 5, 6]


def test_a_run_killed_in_the_evaluation_after_a_checkpoint_keeps_its_records(
        datasets_root, tmp_path, monkeypatch):
    """Python config, every iteration logged, an evaluation every 2: killed inside the first
    evaluation (before its coco_metrics.json), after the checkpoint of iteration 1. The
    resumed run evaluated model_0000001.pth first, but iteration 1's training record, which
    detectron2 writes after the evaluation, was lost; now the checkpoint gives it back."""
    tool = load_tool("train_net")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    extra = ("train.log_period=1", "train.eval_period=2")
    assert _run(tool, "lazy", whole, 4, extra=extra) == 0, _log(whole)
    kill = lambda name, previous: name == "coco_metrics.json"  # noqa: E731
    assert _run(tool, "lazy", killed, 4, kill=kill, extra=extra) == -signal.SIGKILL, _log(killed)
    assert training_records(killed)[-1]["iteration"] == 0
    assert (killed / "last_checkpoint").read_text() == "model_0000001.pth"
    assert _run(tool, "lazy", killed, 4, "--resume", extra=extra) == 0, _log(killed)

    assert _evaluations(killed) == _evaluations(whole) == [1, 4]
    got, expected = training_records(killed), training_records(whole)
    assert [r["iteration"] for r in got] == [r["iteration"] for r in expected] == [0, 1, 2, 3]
    # up to the checkpoint (after it, detectron2's data order starts anew)
    assert got[:2] == expected[:2]
