"""Output folders that hold another run's files: nothing of that run is replaced.

A training locks its folder for its whole run (a second training there, --resume or not,
is refused while the first runs, and takes the folder once it is gone, kill -9 included);
an --eval-only run into a training's folder leaves the training's config.yaml in place;
export refuses a folder of files it did not write.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resnext_det.config.errors import ConfigError
from resnext_det.engine import setup_cfg, setup_lazy
from resnext_det.utils.io import lock_folder, release_folder
from tests.engine.test_train_net import CONFIG, TINY
from tests.helpers import load_tool, lock_held_elsewhere

ROOT = Path(__file__).resolve().parents[2]
LAZY = str(ROOT / "configs/lazy/faster_rcnn_X50_digits.py")
CLS = str(ROOT / "configs/cls/digits_X50_8x4d.yaml")
TRAINING_CONFIG = "# the training's own config.yaml\nSOLVER:\n  BASE_LR: 0.123\n"


def _args(config_file, opts, eval_only=False, resume=False):
    return argparse.Namespace(config_file=config_file, opts=[str(o) for o in opts],
                              eval_only=eval_only, resume=resume, num_gpus=1, num_machines=1,
                              machine_rank=0, dist_url="auto")


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of tmp_path/run, as a running training does."""
    folder = tmp_path / "run"
    folder.mkdir()
    with lock_held_elsewhere(folder) as proc:
        yield folder, proc


def _tool_error(capsys, tool, argv):
    with pytest.raises(SystemExit) as exit_:
        load_tool(tool).run(argv)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("tool, argv, key", [
    ("train_net", ["--config-file", CONFIG, *TINY, "OUTPUT_DIR", "{out}"], "OUTPUT_DIR"),
    ("train_net", ["--config-file", CONFIG, "--resume", *TINY, "OUTPUT_DIR", "{out}"], "OUTPUT_DIR"),
    ("train_net", ["--config-file", LAZY, "train.output_dir={out}"], "train.output_dir"),
    ("pretrain_cls", ["--config-file", CLS, "OUTPUT_DIR", "{out}"], "OUTPUT_DIR"),
])
def test_a_second_training_into_a_locked_folder_is_refused(holder, capsys, tool, argv, key):
    folder, proc = holder
    argv = [str(a).replace("{out}", str(folder)) for a in argv]
    error = _tool_error(capsys, tool, argv)
    assert re.search(rf"{re.escape(key)}='.*run' is not valid: expected a folder no other "
                     rf"training writes in\. Process {proc.pid} trains into it", error), error
    assert sorted(os.listdir(folder)) == [".lock"]  # no config.yaml, log.txt written


def test_the_lock_goes_with_its_process_even_after_kill_9(holder):
    folder, proc = holder
    assert lock_folder(folder) == str(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert lock_folder(folder) is None  # taken: the dead run's lock did not stay
        assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    finally:
        release_folder(folder)
    assert (folder / ".lock").read_text() == ""


def _holder_seen_from_outside(folder):
    """The pid another process finds holding `folder`'s lock ("None": free)."""
    code = "import sys; from resnext_det.utils.io import lock_folder; print(lock_folder(sys.argv[1]))"
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()


def test_a_training_gives_its_lock_back_when_it_ends(tmp_path):
    """setup_cfg takes the lock; the end of engine.train gives it back (here: a failure)."""
    from resnext_det.engine import run

    out = tmp_path / "run"
    cfg = setup_cfg(_args(CONFIG, [*TINY, "OUTPUT_DIR", out, "DATASETS.TRAIN", "('nowhere',)"]),
                    task="train")
    assert _holder_seen_from_outside(out) == str(os.getpid())
    with pytest.raises(ConfigError, match="DATASETS.TRAIN='nowhere'"):
        run(cfg, _args(CONFIG, []))
    assert _holder_seen_from_outside(out) == "None"


@pytest.mark.parametrize("lazy", [False, True])
def test_an_evaluation_keeps_the_trainings_config(tmp_path, lazy):
    """detectron2's default_setup replaces OUTPUT_DIR/config.yaml; the evaluation's config
    goes to OUTPUT_DIR/inference/config.yaml instead."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(TRAINING_CONFIG)
    if lazy:
        setup_lazy(_args(LAZY, [f"train.output_dir={out}"], eval_only=True))
    else:
        setup_cfg(_args(CONFIG, [*TINY, "OUTPUT_DIR", out], eval_only=True), task="evaluate")
    assert (out / "config.yaml").read_text() == TRAINING_CONFIG
    written = (out / "inference/config.yaml").read_text()
    assert str(out) in written and "0.123" not in written
    assert not [n for n in os.listdir(out) if ".kept-" in n]


def test_the_next_run_puts_back_what_a_killed_evaluation_kept(tmp_path):
    """An --eval-only killed inside default_setup left the training's config.yaml as
    config.yaml.kept-<pid> (and the evaluation's config.yaml in its place): the next
    evaluation (or training) puts it back."""
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no process has now
    (out / f"config.yaml.kept-{dead.pid}").write_text(TRAINING_CONFIG)
    (out / "config.yaml").write_text("# the killed evaluation's\n")
    setup_cfg(_args(CONFIG, [*TINY, "OUTPUT_DIR", out], eval_only=True), task="evaluate")
    assert (out / "config.yaml").read_text() == TRAINING_CONFIG
    assert not [n for n in os.listdir(out) if ".kept-" in n]


def test_export_refuses_a_trainings_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    files = {"config.yaml": TRAINING_CONFIG, "model_final.pth": "the training's weights"}
    for name, text in files.items():
        (out / name).write_text(text)
    error = _tool_error(capsys, "export_model", ["--output", str(out), "--config-file", CONFIG,
                                                 *map(str, TINY)])
    assert re.search(r"--output='.*run' is not valid: expected a new or empty folder, or one "
                     r"that export_model wrote\. It holds 2 files that export did not write "
                     r"\(e\.g\. 'config\.yaml'\)", error), error
    assert {p.name: p.read_text() for p in out.iterdir()} == files


def test_export_takes_a_new_or_its_own_folder(tmp_path):
    from resnext_det.export.main import claim_output_dir

    out = tmp_path / "export"
    claim_output_dir(str(out))  # new
    (out / "model.ts").write_text("an earlier export")
    claim_output_dir(str(out))  # its own: the next export may replace its files
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output_dir(str(empty))
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("")
    with pytest.raises(ConfigError, match="It holds 1 files"):
        claim_output_dir(str(tmp_path / "other"))


def test_a_listing_mark_takes_an_earlier_marks_files_as_the_tools(tmp_path):
    """A prediction folder marked before marks listed the files: its files were the tool's
    (the old mark said so), and stay so once the new mark lists them; a file put there
    later is not."""
    from resnext_det.utils.io import claim_folder, mark_written

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".mark").write_text("tool writes here\n")  # the old mark: no listing
    (folder / "drawn.png").write_bytes(b"drawn by the tool")
    text = "tool writes here; what it wrote:\n"
    assert claim_folder(str(folder), ".mark", text, own=("config.yaml",)) == []
    release_folder(str(folder))
    assert (folder / ".mark").read_text() == text + "drawn.png\n"
    mark_written(str(folder), ".mark", "next.png")
    (folder / "config.yaml").write_text("the tool's")
    (folder / "user.png").write_bytes(b"the user's")
    assert claim_folder(str(folder), ".mark", text, own=("config.yaml",)) == ["user.png"]
    assert (folder / ".mark").read_text() == text + "drawn.png\nnext.png\n"


def test_ctrl_c_in_a_refused_start_puts_the_earlier_config_back(tmp_path, monkeypatch):
    """Ctrl-C while default_setup writes config.yaml (in place: it was left empty), or before
    the first iteration: the earlier run's config.yaml is put back (was: on UserError only)."""
    from resnext_det.engine import setup as setup_module
    from resnext_det.engine.setup import output_folder

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(TRAINING_CONFIG)
    args = _args(CONFIG, [*TINY, "OUTPUT_DIR", out])

    def cut_short(cfg, args):
        (out / "config.yaml").write_text("")  # open("w") done, the dump not yet
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(setup_module, "default_setup", cut_short)
        with pytest.raises(KeyboardInterrupt):
            setup_cfg(args, task="train")
    assert (out / "config.yaml").read_text() == TRAINING_CONFIG
    release_folder(str(out))
    cfg = setup_cfg(args, task="train")
    assert (out / "config.yaml").read_text() != TRAINING_CONFIG  # default_setup's own
    with pytest.raises(KeyboardInterrupt), output_folder(cfg.OUTPUT_DIR):
        raise KeyboardInterrupt  # before folder.starts()
    assert (out / "config.yaml").read_text() == TRAINING_CONFIG


def test_the_demo_holds_its_folder_until_it_has_drawn(tmp_path, monkeypatch):
    """The training's release gave the demo folder's lock back before the demo drew from
    model_final.pth: a second demo could clear the folder meanwhile. A lock taken twice by
    one process now needs two releases."""
    demo = load_tool("demo")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "demo"
    seen = {}

    def fake_train(cfg):  # engine.train's output_folder gives back setup_cfg's take
        release_folder(cfg.OUTPUT_DIR)
        return {"bbox": {"AP": 0.0, "AP50": 0.0}}

    def draw(cfg, path):
        seen["drawing"] = _holder_seen_from_outside(out)
        return path

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(demo, "draw_demo_predictions", draw)
    monkeypatch.setattr(demo, "plot_training_curves", lambda *args, **kwargs: None)
    demo.run_demo(demo.DEMO_CONFIG, [*map(str, TINY), "OUTPUT_DIR", str(out)],
                  dataset=dict(num_train=4, num_val=2, image_size=64, digit_sizes=(12, 24),
                               progress_every=0))
    assert seen["drawing"] == str(os.getpid())  # still the demo's while it draws
    assert _holder_seen_from_outside(out) == "None"  # and given back at its end


def test_an_earlier_run_comes_back_when_the_refused_one_made_no_folder(tmp_path):
    """put_back_aside: a refused start that wrote nothing (no folder at all, e.g. an
    --eval-only whose inference/ was never made) still gets the earlier run back; one that
    wrote a result keeps both."""
    from resnext_det.utils.io import put_back_aside

    kept, folder = tmp_path / "inference.before-1", tmp_path / "inference"
    kept.mkdir()
    (kept / "coco_metrics.json").write_text("{}")
    assert put_back_aside(str(folder), str(kept), ("config.yaml",))
    assert (folder / "coco_metrics.json").read_text() == "{}" and not kept.exists()
    folder.rename(kept)
    folder.mkdir()
    (folder / "coco_metrics.json").write_text('{"new": 1}')
    assert not put_back_aside(str(folder), str(kept), ("config.yaml",))
    assert kept.is_dir() and (folder / "coco_metrics.json").read_text() == '{"new": 1}'
