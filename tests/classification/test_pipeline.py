"""tools/pretrain_then_detect.py: its flags and the detection budget it gives both detectors."""
import pytest

from tests.helpers import load_tool, lock_held_elsewhere

tool = load_tool("pretrain_then_detect")


def test_detection_budget_scales_the_demo_schedule():
    opts = dict(zip(*[iter(tool.detection_budget(600))] * 2))
    assert opts["SOLVER.MAX_ITER"] == "600" and opts["SOLVER.STEPS"] == "(440, 540)"
    assert opts["SOLVER.WARMUP_ITERS"] == "100" and opts["TEST.EVAL_PERIOD"] == "0"


@pytest.mark.parametrize("det_iters", range(1, 8))
def test_a_short_detection_budget_keeps_steps_below_max_iter(det_iters):
    """--det-iters 1 to 5 scaled the demo's steps onto MAX_ITER or onto each other: refused
    (or an fvcore traceback) after the whole pretraining."""
    from resnext_det.config.checks import check_training_keys
    from tests.helpers import make_cfg

    cfg = make_cfg(*tool.detection_budget(det_iters), "DATASETS.TRAIN", "('digits_train',)")
    check_training_keys(cfg)  # raised for 1 to 5
    assert all(1 <= step < det_iters for step in cfg.SOLVER.STEPS)


def test_the_output_folder_is_claimed(tmp_path, monkeypatch):
    """A summary.json of the user's in --output was replaced without a word; a folder the
    pipeline marked is reused and its earlier summary.json goes before the new run."""
    from resnext_det.utils.io import FolderError

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("mine")
    monkeypatch.setattr(tool, "ensure_digits_dataset", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(FolderError, match="holds 1 files that pretrain_then_detect did not write"):
        tool.run_pipeline(str(out), 1, 1)
    assert (out / "summary.json").read_text() == "mine"
    (out / "summary.json").unlink()
    monkeypatch.setattr(tool, "pretrain", lambda *a: pytest.fail("stop here"))
    monkeypatch.setattr(tool, "ensure_digits_dataset", lambda *a, **k: None)
    with pytest.raises(pytest.fail.Exception):
        tool.run_pipeline(str(out), 1, 1)
    (out / "summary.json").write_text("an earlier run's")
    with pytest.raises(pytest.fail.Exception):
        tool.run_pipeline(str(out), 1, 1)  # marked: claimed again, its summary removed
    assert not (out / "summary.json").exists()


def test_flags():
    args = tool.parse(["--cls-epochs", "3", "--det-iters", "50"])
    assert (args.cls_epochs, args.det_iters) == (3, 50)
    assert tool.CLS_CONFIG.endswith("configs/cls/digits_X50_8x4d.yaml")


def test_bad_flags_are_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for argv, message in ((["--cls-epochs", "0"], "--cls-epochs 0: expected >= 1"),
                          (["--det-iters", "-1"], "--det-iters -1: expected >= 1"),
                          (["--output", str(tmp_path / "afile")], "is a file; expected a folder")):
        with pytest.raises(SystemExit) as exit_info:
            tool.parse(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_pretraining_step_starts_anew_in_its_folder(tmp_path, monkeypatch):
    """A second run of the pipeline: the pretraining folder's earlier checkpoints are cleared
    (a new training refuses to overwrite them); other files stay. A folder the pipeline did
    not write (no mark: another training's) is refused, and nothing in it is touched."""
    from resnext_det.config.errors import ConfigError

    folder = tmp_path / "pretrain"
    folder.mkdir()
    names = ("model_0000009.pth", "model_final.pth", "model_final.pkl", "last_checkpoint",
             "metrics.json", "notes.txt")
    for name in names:
        (folder / name).write_text("earlier")
    seen = {}
    monkeypatch.setattr(tool, "pretrain_main",
                        lambda args: seen.update(files=sorted(p.name for p in folder.iterdir())))
    with pytest.raises(ConfigError, match=r"OUTPUT_DIR=.* files the demo did not write"):
        tool.pretrain(str(folder), 1)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names) and not seen
    (folder / tool.demo.DEMO_MARK).write_text("an earlier pipeline run's")
    tool.pretrain(str(folder), 1)
    assert seen["files"] == [".demo_output", ".lock", "notes.txt"]


def test_the_pretraining_step_leaves_a_running_pretraining_alone(tmp_path, monkeypatch):
    """A pipeline started while another one pretrains in the same folder: refused before its
    clearing, so the running pretraining's checkpoints and metrics.json stay."""
    from resnext_det.utils.io import FolderError

    folder = tmp_path / "pretrain"
    folder.mkdir()
    names = (tool.demo.DEMO_MARK, "model_0000009.pth", "last_checkpoint", "metrics.json")
    for name in names:
        (folder / name).write_text("the running pretraining's")
    with lock_held_elsewhere(folder) as holder:
        monkeypatch.setattr(tool, "pretrain_main", lambda args: pytest.fail("pretraining ran"))
        with pytest.raises(FolderError, match=f"process {holder.pid} writes in it"):
            tool.pretrain(str(folder), 1)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names + (".lock",))


@pytest.mark.parametrize("cls_epochs", [1, 2, 3])
def test_a_short_pretraining_warms_up_within_its_epochs(tmp_path, monkeypatch, cls_epochs):
    """--cls-epochs 1: the digits config's WARMUP_EPOCHS (2) is past the run's end, a
    ConfigError (it was squeezed into the 1 epoch); the pipeline cuts it to the run."""
    from resnext_det.classification import get_cls_cfg
    from resnext_det.config.pretraining_checks import check_pretraining_solver

    seen = {}
    monkeypatch.setattr(tool, "pretrain_main", lambda args: seen.update(opts=args.opts))
    tool.pretrain(str(tmp_path / "pretrain"), cls_epochs)
    cfg = get_cls_cfg()
    cfg.merge_from_file(tool.CLS_CONFIG)
    configured = cfg.SOLVER.WARMUP_EPOCHS
    cfg.merge_from_list(seen["opts"])
    check_pretraining_solver(cfg.SOLVER)
    assert cfg.SOLVER.MAX_EPOCHS == cls_epochs
    assert cfg.SOLVER.WARMUP_EPOCHS == min(configured, cls_epochs) and configured > 1
