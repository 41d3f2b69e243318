"""Kills and damaged checkpoints: nothing written is lost, --resume goes on.

A real SIGKILL lands inside a checkpoint write (paused_writes.py holds each write open for
two seconds, so the kill cannot miss it: the write's temporary file is still there); then every
checkpoint on disk must load and --resume must continue from the newest. A truncated
newest checkpoint makes --resume fall back to the newest readable one, naming the bad file.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnext_det.checkpoint import ResNeXtCheckpointer, UnreadableFileError, read_weights
from resnext_det.checkpoint.convert import AUTHOR
from resnext_det.classification import build_cls_model
from resnext_det.classification.checkpoint import build_cls_checkpointer
from resnext_det.config.errors import ConfigError
from resnext_det.engine.checks import check_no_earlier_run
from resnext_det.utils.io import atomic_write, lock_folder, release_folder
from tests.classification.helpers import tiny_cfg, tiny_opts, write_folder
from tests.engine.test_train_net import CONFIG, TINY

ROOT = Path(__file__).resolve().parents[2]
PAUSED_WRITES = Path(__file__).with_name("paused_writes.py")


def _temporaries(folder):
    return [n for n in os.listdir(folder) if ".tmp-" in n] if os.path.isdir(folder) else []


def _checkpoints(folder):
    return [n for n in os.listdir(folder) if n.endswith(".pth")] if os.path.isdir(folder) else []


def _kill_inside_a_write(cmd, env, out, timeout=300):
    """Run `cmd` (python TOOL ARGS) with its checkpoint writes paused before their sync and
    SIGKILL it inside a write that is not its first (so one complete checkpoint exists)."""
    log = out.parent / "killed_run.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([cmd[0], str(PAUSED_WRITES), *cmd[1:]], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _temporaries(out) and _checkpoints(out):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert _temporaries(out), "the write ended before the kill (no temporary file left)"
            return
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    pytest.fail(f"the run ended (rc {proc.returncode}) or ran {timeout} s without a second "
                f"checkpoint write:\n{log.read_text()[-3000:]}")


def _all_checkpoints_load(out):
    """Every .pth loads; the iteration of the newest (what --resume must continue from)."""
    names = sorted(_checkpoints(out), key=lambda n: os.path.getmtime(out / n))
    assert names, "the killed run wrote no checkpoint"
    loaded = {n: read_weights(out / n).obj for n in names}  # raises on a damaged file
    if (out / "last_checkpoint").exists():  # the kill may have come before the pointer
        assert (out / "last_checkpoint").read_text().strip() in loaded
    return loaded[names[-1]]["iteration"]


def test_train_net_killed_while_saving_then_resumed(datasets_root, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    cmd = lambda *args: [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",  # noqa
                         CONFIG, *args, *map(str, TINY), "SOLVER.CHECKPOINT_PERIOD", "1",
                         "OUTPUT_DIR", str(out)]
    _kill_inside_a_write(cmd("SOLVER.MAX_ITER", "400"), env, out)
    iteration = _all_checkpoints_load(out)
    proc = subprocess.run(cmd("--resume", "SOLVER.MAX_ITER", str(iteration + 3)), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Starting training from iteration {iteration + 1}" in proc.stderr + proc.stdout
    assert not _temporaries(out)  # the interrupted write's leftover is gone


def test_pretraining_killed_while_saving_then_resumed(tmp_path):
    data, out = write_folder(tmp_path / "folder"), tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "tools/pretrain_cls.py"), "--num-gpus", "1"]
    opts = lambda *extra: tiny_opts(data, out, "SOLVER.CHECKPOINT_PERIOD", 1, *extra)  # noqa: E731
    _kill_inside_a_write(cmd + opts("SOLVER.MAX_EPOCHS", 500), env, out)
    iteration = _all_checkpoints_load(out)
    proc = subprocess.run(cmd + ["--resume"] + opts("SOLVER.MAX_EPOCHS", 500, "SOLVER.MAX_ITER",
                                                    iteration + 2),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # detectron2's "iteration": the last one done (0-based); MAX_ITER k + 2 ends after k + 1
    assert read_weights(out / "model_final.pth").obj["iteration"] == iteration + 1


def _children(pid):
    """The pids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # not a process, or one that just ended
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after "(comm)"
            found.append(int(entry))
    return found


def _alive(pids):
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc: Linux")
@pytest.mark.parametrize("sig, sigint, rc, said", [
    (signal.SIGTERM, signal.SIG_IGN, 143, "terminated (SIGTERM)"),
    (signal.SIGINT, signal.SIG_DFL, 130, "interrupted (Ctrl-C)")])
def test_workers_end_with_a_tool_killed_by_sigterm(datasets_root, tmp_path, sig, sigint, rc,
                                                   said):
    """`train_net.py --num-gpus 2 ... &` (a shell's background job ignores SIGINT, the signal
    torch's workers get when the tool ends), then SIGTERM to the tool: its two workers end too
    and the folder's lock is free; they went on training, orphaned, before. And the tool
    ends as one process does, one line and 143 (it died of the signal without a word); a
    SIGINT to its process alone (`kill -INT`), with 130: it printed a KeyboardInterrupt
    traceback, then waited at its exit for the workers, which trained on."""
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    env.pop("RESNEXT_DET_DEBUG", None)
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", CONFIG,
           "--num-gpus", "2", *map(str, TINY), "SOLVER.MAX_ITER", "100000", "OUTPUT_DIR", str(out)]
    with open(tmp_path / "stderr", "w+") as err:
        tool = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
        workers = []
        try:
            deadline = time.monotonic() + 300
            while not _checkpoints(out) and tool.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _checkpoints(out), "the two-process training wrote no checkpoint"
            workers += _children(tool.pid)
            tool.send_signal(sig)
            assert tool.wait(timeout=60) == rc
            deadline = time.monotonic() + 30
            while _alive(workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(workers) >= 2 and not _alive(workers)
            assert lock_folder(out) is None  # no worker holds it
            err.seek(0)
            said_all = err.read()
            assert said_all.rstrip().endswith(said) and said_all.count(said) == 1, said_all[-3000:]
            assert "Traceback" not in said_all, said_all[-3000:]
        finally:
            release_folder(out)
            tool.kill()
            tool.wait()
            for worker in workers:  # orphans of a failed check
                if os.path.exists(f"/proc/{worker}"):
                    os.kill(worker, signal.SIGKILL)


class _Counter:
    """A checkpointable with a state: which save it came from."""

    def __init__(self):
        self.value = 0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_detection_resume_skips_a_truncated_newest_checkpoint(tmp_path, caplog):
    model, counter = torch.nn.Conv2d(3, 4, 1), _Counter()
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path), counter=counter)
    for value, name in ((1, "model_0000001"), (2, "model_0000002")):
        counter.value = value
        checkpointer.save(name)
        time.sleep(0.01)  # distinct modification times
    newest = tmp_path / "model_0000002.pth"
    newest.write_bytes(newest.read_bytes()[:100])
    counter.value = 0
    with caplog.at_level("WARNING"):
        checkpointer.resume_or_load("", resume=True)
    assert counter.value == 1
    assert f"Cannot resume from {newest}" in caplog.text and "truncated" in caplog.text


def test_no_readable_checkpoint_says_what_lets_a_training_start_there(tmp_path):
    """Every checkpoint damaged: the error said "Start without --resume", which a new
    training refuses while the checkpoints are there (check_no_earlier_run). What it says
    now, moving them and the pointer out, lets one start."""
    model, counter = torch.nn.Conv2d(3, 4, 1), _Counter()
    (tmp_path / "run").mkdir()
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path / "run"), counter=counter)
    for name in ("model_0000001", "model_0000002"):
        checkpointer.save(name)
        path = tmp_path / "run" / f"{name}.pth"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UnreadableFileError, match="no readable checkpoint") as err:
        checkpointer.resume_or_load("", resume=True)
    assert "without --resume" not in str(err.value)
    with pytest.raises(ConfigError, match="without an earlier run's checkpoints"):
        check_no_earlier_run(checkpointer)
    tried = re.search(r"\(tried (.*)\)", str(err.value)).group(1).split(", ")
    assert "move them and last_checkpoint out of the folder" in str(err.value)
    (tmp_path / "aside").mkdir()
    for path in [*tried, str(tmp_path / "run/last_checkpoint")]:
        os.replace(path, tmp_path / "aside" / os.path.basename(path))
    check_no_earlier_run(checkpointer)


@pytest.mark.parametrize("pointer", [b"\xff\xfe\x00model", b"../elsewhere/model_0000001.pth",
                                     b"", b"model_0000009.pth"])
def test_a_damaged_pointer_resumes_from_the_newest_checkpoint(tmp_path, caplog, pointer):
    """A last_checkpoint that is not a file name: fvcore's read raised a bare
    UnicodeDecodeError, or it named a file outside OUTPUT_DIR; empty or naming a missing
    file, it was passed over without a word."""
    model, counter = torch.nn.Conv2d(3, 4, 1), _Counter()
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path), counter=counter)
    for value, name in ((1, "model_0000001"), (2, "model_0000002")):
        counter.value = value
        checkpointer.save(name)
        time.sleep(0.01)
    (tmp_path / "last_checkpoint").write_bytes(pointer)
    counter.value = 0
    with caplog.at_level("WARNING"):
        checkpointer.resume_or_load("", resume=True)
    assert counter.value == 2
    said = "names" if pointer == b"model_0000009.pth" else "is damaged"  # a missing file
    assert f"{tmp_path / 'last_checkpoint'} {said}" in caplog.text


@pytest.mark.parametrize("final_iteration, expected", [(5, 9), (11, 11)])
def test_without_a_pointer_the_latest_iteration_is_resumed(tmp_path, final_iteration, expected):
    """No last_checkpoint (a kill before it, a copied folder): the checkpoint of the latest
    iteration, whatever the modification times say (`cp -r` without -p gives copy order;
    here the earliest is made the newest). model_final's iteration is the one it stores: a
    --resume with a larger SOLVER.MAX_ITER writes model_0000009.pth after a final of 5."""
    model, counter = torch.nn.Conv2d(3, 4, 1), _Counter()
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path), counter=counter)
    for value, name in ((1, "model_0000001"), (final_iteration, "model_final"), (9, "model_0000009")):
        counter.value = value
        checkpointer.save(name, iteration=value)
    os.remove(tmp_path / "last_checkpoint")
    for age, name in enumerate(("model_0000001", "model_final", "model_0000009")):
        os.utime(tmp_path / f"{name}.pth", (1e9 - age * 100, 1e9 - age * 100))
    counter.value = 0
    extra = checkpointer.resume_or_load("", resume=True)
    assert (counter.value, extra["iteration"]) == (expected, expected)


@pytest.mark.parametrize("resume", [False, True])
def test_a_write_killed_before_any_checkpoint_leaves_nothing(tmp_path, resume):
    """A kill inside the first checkpoint write: no checkpoint to resume from, and its
    model_0000004.pth.tmp-<pid> stayed in the folder for good (only a resume from a
    checkpoint cleaned up)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has now
    left = tmp_path / f"model_0000004.pth.tmp-{dead.pid}"
    left.write_bytes(b"half a checkpoint")
    checkpointer = ResNeXtCheckpointer(torch.nn.Conv2d(3, 4, 1), str(tmp_path))
    checkpointer.resume_or_load("", resume=resume)
    assert not left.exists()


def test_pretraining_resume_skips_a_truncated_newest_checkpoint(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, tmp_path)
    checkpointer = build_cls_checkpointer(cfg, build_cls_model(cfg, 3))
    checkpointer.save("model_0000001", iteration=1)
    time.sleep(0.01)
    checkpointer.save("model_0000002", iteration=2)
    (tmp_path / "model_0000002.pth").write_bytes(b"")
    with caplog.at_level("WARNING"):
        extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    assert "model_0000002.pth" in caplog.text and "empty" in caplog.text


def test_a_weights_file_in_output_dir_is_not_a_checkpoint(tmp_path):
    """Only detectron2's checkpoint names (model_<iteration>.pth, model_final.pth) count
    when no pointer exists; a user's R-50.pth beside them is the MODEL.WEIGHTS to start from."""
    source, counter = torch.nn.Conv2d(3, 4, 1), _Counter()
    torch.save({"model": source.state_dict(), "__author__": AUTHOR}, tmp_path / "R-50.pth")
    model = torch.nn.Conv2d(3, 4, 1)
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path), counter=counter)
    assert not checkpointer.has_checkpoint()
    counter.value = 7
    checkpointer.resume_or_load(str(tmp_path / "R-50.pth"), resume=True)  # loads, not resumes
    assert counter.value == 7 and torch.equal(model.weight, source.weight)
    checkpointer.save("model_0000003")  # a checkpoint of ours, then a kill before the pointer
    os.remove(tmp_path / "last_checkpoint")
    assert checkpointer.has_checkpoint()
    counter.value = 0
    checkpointer.resume_or_load(str(tmp_path / "R-50.pth"), resume=True)
    assert counter.value == 7


def test_resume_keeps_a_live_writers_temporary_and_removes_a_dead_ones(tmp_path):
    """An --eval-only --resume on a folder that a training run is saving into removed the
    run's temporary mid-write: the run's rename then failed and its checkpoint was lost."""
    checkpointer = ResNeXtCheckpointer(torch.nn.Conv2d(3, 4, 1), str(tmp_path))
    checkpointer.save("model_0000001")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_tmp = tmp_path / f"model_0000002.pth.tmp-{writer.pid}"
        dead_tmp = tmp_path / f"model_0000002.pth.tmp-{dead.pid}"
        live_tmp.write_bytes(b"half a checkpoint")
        dead_tmp.write_bytes(b"left by a kill")
        checkpointer.resume_or_load("", resume=True)
        assert live_tmp.exists() and not dead_tmp.exists()
    finally:
        writer.kill()


def test_a_pointer_to_a_missing_checkpoint_is_an_error(tmp_path):
    """It used to load MODEL.WEIGHTS while the trainer went on after the pointer's iteration."""
    checkpointer = ResNeXtCheckpointer(torch.nn.Conv2d(3, 4, 1), str(tmp_path))
    checkpointer.save("model_0000009")
    os.remove(tmp_path / "model_0000009.pth")
    with pytest.raises(UnreadableFileError, match=r"last_checkpoint: names .*model_0000009\.pth"):
        checkpointer.resume_or_load("", resume=True)


def test_a_resume_with_another_models_shapes_is_an_error(tmp_path, caplog):
    """detectron2 loaded what fit; SGD then failed on the momentum buffers of the old
    shapes (a traceback), or went on with the changed layers at their random start. The same
    file as MODEL.WEIGHTS of a new run still loads what fits (fine-tuning), with warnings."""
    from resnext_det.checkpoint import WeightsMismatchError

    def model(head):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, head, 1))

    ResNeXtCheckpointer(model(5), str(tmp_path)).save("model_0000003")
    changed = model(7)
    with pytest.raises(WeightsMismatchError, match=r"(?s)model_0000003\.pth: this run's checkpoint "
                       r"does not fit the model the config builds now:\n  '1\.weight': "
                       r"checkpoint \(5, 4, 1, 1\), model \(7, 4, 1, 1\)\n  '1\.bias'.*"
                       r"The config changed"):
        ResNeXtCheckpointer(changed, str(tmp_path)).resume_or_load("", resume=True)
    bigger = torch.nn.Sequential(*model(5), torch.nn.Conv2d(5, 5, 1))
    for net, what in ((bigger, "'2.weight': not in the checkpoint"),
                      (model(5)[:1], "'1.weight': not in the model")):
        with pytest.raises(WeightsMismatchError, match=re.escape(what)):
            ResNeXtCheckpointer(net, str(tmp_path)).resume_or_load("", resume=True)
    with caplog.at_level("WARNING"):
        ResNeXtCheckpointer(changed, str(tmp_path / "new")).resume_or_load(
            str(tmp_path / "model_0000003.pth"), resume=True)
    assert "Skip loading parameter '1.weight'" in caplog.text
    assert torch.equal(changed[0].weight, torch.load(tmp_path / "model_0000003.pth")["model"]["0.weight"])


def test_a_failed_load_leaves_the_checkpointer_usable(tmp_path):
    """detectron2's load kept its URL state after an error; the next load was an AssertionError."""
    model = torch.nn.Conv2d(3, 4, 1)
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path))
    checkpointer.save("good")
    (tmp_path / "bad.pth").write_bytes(b"\x80\x02 cut")
    with pytest.raises(UnreadableFileError):
        checkpointer.load(str(tmp_path / "bad.pth"))
    checkpointer.load(str(tmp_path / "good.pth"))


def test_resume_cuts_every_record_after_the_checkpoint(tmp_path):
    """JSONWriter writes the evaluation of iteration 17 after the training record of 19 (its
    scalars in the order they were put): resumed at 18, the cut stopped at 17's evaluation and
    kept 19's record, which the resumed run then logged again. A whole last record whose
    newline the kill lost gets it back; a cut line goes. Extending a finished run keeps its
    final evaluation (no "lr") at the start iteration, not a training record there."""
    from resnext_det.engine.resume import drop_records_after

    def record(iteration, **scalars):
        return json.dumps({"iteration": iteration, **scalars}) + "\n"

    training = [record(i, total_loss=1.0, lr=0.1) for i in range(20)]
    evaluation = record(17, **{"bbox/AP": 5.0})
    path = tmp_path / "metrics.json"
    path.write_text("".join(training) + evaluation + '{"iteration": 20, "tot')
    assert drop_records_after(path, 18) == 3
    assert path.read_text() == "".join(training[:18]) + evaluation
    path.write_text("".join(training[:18]) + evaluation.strip())
    assert drop_records_after(path, 18) == 0
    assert path.read_text() == "".join(training[:18]) + evaluation
    final = record(20, **{"bbox/AP": 7.0})  # a finished run's, then an extension killed
    path.write_text("".join(training) + final + record(20, total_loss=1.0, lr=0.1))
    assert drop_records_after(path, 20, evaluations_at=20) == 1
    assert path.read_text() == "".join(training) + final


class _InterruptedFile:
    """A file whose write raises KeyboardInterrupt (a Ctrl-C, or a SIGTERM as Terminated)
    once `after` bytes are written."""

    def __init__(self, f, after):
        self.f, self.left = f, after

    def write(self, data):
        self.left -= len(data)
        if self.left < 0:
            raise KeyboardInterrupt
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_an_interrupt_inside_torch_save_stays_an_interrupt(tmp_path):
    """Ctrl-C while a checkpoint's tensors were written: torch's zip writer, closed on the
    way out, raised "unexpected pos" over the KeyboardInterrupt, so the run ended with a
    traceback and status 1 (seen once in a fresh-clone CI of the test below). The interrupt
    comes out, and no file or temporary is left."""
    path = tmp_path / "model.pth"
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, lambda f: torch.save({"w": torch.zeros(100_000)},
                                                _InterruptedFile(f, 5000)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig, rc, said", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                           (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_ends_a_run_with_one_line_and_its_checkpoints_whole(datasets_root, tmp_path, sig,
                                                                    rc, said):
    """SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler) while training: one line, exit status
    130 or 143, no Python traceback; every checkpoint written so far loads. SIGTERM ended
    the process where it stood (no finally block ran)."""
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    env.pop("RESNEXT_DET_DEBUG", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools/train_net.py"), "--config-file",
                             CONFIG, *map(str, TINY), "SOLVER.CHECKPOINT_PERIOD", "1",
                             "SOLVER.MAX_ITER", "400", "OUTPUT_DIR", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not _checkpoints(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == rc, err[-3000:]
    assert err.rstrip().endswith(said) and "Traceback" not in err, err[-3000:]
    assert _all_checkpoints_load(out) >= 0


def _loading(pid, library):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return library in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps")
@pytest.mark.parametrize("tool", ["train_net", "convert_weights"])
def test_ctrl_c_while_a_tool_imports_ends_it_without_a_traceback(tool):
    """A Ctrl-C in the seconds a tool imports torch and detectron2 printed a KeyboardInterrupt
    traceback from inside torch; it ends the process as SIGINT's default does (exit 130)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RESNEXT_DET_DEBUG", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / f"{tool}.py"), "--help"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _loading(proc.pid, "libtorch_cpu"):
        assert time.monotonic() < deadline, "torch was not loaded in 60 s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)  # torch's shared library is in: its import is under way
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT and "Traceback" not in err, (proc.returncode, err)


def test_saved_rng_states_restore_every_generator_a_step_draws_from(tmp_path):
    """torch, numpy (detectron2's augmentations) and python's random, through a checkpoint
    file read back with weights_only: the draws after restoring are the draws after saving."""
    import random

    import numpy as np

    from resnext_det.engine.resume import rng_state, set_rng_state

    torch.save({"rng": rng_state()}, tmp_path / "state.pth")

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    first = draws()
    set_rng_state(torch.load(tmp_path / "state.pth", weights_only=True)["rng"])
    assert draws() == first


def test_a_fresh_run_sets_aside_the_records_of_a_run_without_checkpoint(tmp_path, monkeypatch):
    """A run killed before its first checkpoint, then started again (at iteration 0): its
    records stayed in front of the new run's (two curves), after a line the kill cut short
    (the new run's first record joined to it: no JSON reader read on). Now they are moved to
    metrics.json.before-<time>, whole, and the new run writes a file of its own, through
    detectron2's JSONWriter opened before the hook ran. Resuming (start_iter > 0) cuts only
    the tail."""
    from types import SimpleNamespace

    from detectron2.utils.events import EventStorage, JSONWriter

    from resnext_det.engine.resume import DropRecordsAfterCheckpoint

    path = tmp_path / "metrics.json"
    killed = '{"iteration": 0, "total_loss": 1.0}\n{"iteration": 5, "total_loss": 0.5}\n{"iter'
    path.write_text(killed)
    writer = JSONWriter(str(path))  # opened to append, as detectron2's default_writers open it
    hook = DropRecordsAfterCheckpoint(str(tmp_path), SimpleNamespace(loaded_file=None))
    hook.trainer = SimpleNamespace(start_iter=0, max_iter=10)
    hook.before_train()
    [kept] = tmp_path.glob("metrics.json.before-*")
    assert kept.read_text() == killed
    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 2.0)
        writer.write()
    writer.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"iteration": 0, "total_loss": 2.0}]

    path.write_text(killed)  # a second run, killed before its first checkpoint too
    hook.trainer = SimpleNamespace(start_iter=0, max_iter=10)
    with monkeypatch.context() as patch:  # in the same second as the first
        [first] = tmp_path.glob("metrics.json.before-*")
        patch.setattr(time, "strftime", lambda fmt: first.name.rsplit("before-", 1)[1])
        hook.before_train()
    assert sorted(p.read_text() for p in tmp_path.glob("metrics.json.before-*")) == [killed] * 2

    path.write_text('{"iteration": 0, "total_loss": 1.0}\n{"iteration": 5, "total_loss": 0.5}\n{"iter')
    hook.trainer = SimpleNamespace(start_iter=3, max_iter=10)
    hook.before_train()
    assert path.read_text() == '{"iteration": 0, "total_loss": 1.0}\n'
