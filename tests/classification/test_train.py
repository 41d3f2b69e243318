"""tools/pretrain_cls.py's main on a tiny folder: train, metrics, checkpoints, resume."""
import math

import pytest
import torch

from resnext_det.classification import main
from resnext_det.classification import checkpoint as ckpt_module
from resnext_det.classification.checkpoint import CheckpointFiles, load_checkpoint
from resnext_det.classification.events import read_metrics
from resnext_det.classification.trainer import ClsTrainer
from tests.helpers import load_tool

from .helpers import cls_args, tiny_opts, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"))


def test_train_few_iterations(folder, tmp_path):
    result = load_tool("pretrain_cls").run(["--num-gpus", "1"] + tiny_opts(folder, tmp_path))
    epochs = read_metrics(tmp_path, "epoch")
    assert [r["iteration"] for r in epochs] == [4, 8]  # 18 images / 4: 4 iterations per epoch
    assert all(math.isfinite(r["train_loss"]) for r in epochs)
    assert 0 <= epochs[-1]["val_top1_err"] <= 100
    assert epochs[-1]["val_top5_err"] == 0  # 3 classes: the top 5 hold them all
    assert epochs[-1]["val_images"] == 6
    iters = read_metrics(tmp_path, "iter")
    assert len(iters) == 8 and all(r["images_per_s"] > 0 and r["eta_s"] >= 0 for r in iters)
    assert (tmp_path / "tensorboard").is_dir() and (tmp_path / "model_0000003.pth").is_file()
    assert CheckpointFiles(tmp_path).last() == str(tmp_path / "model_final.pth")
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert final["iteration"] == 8
    assert final["classes"] == ["blue", "green", "red"]  # sorted folder names
    assert final["resnext_det"]["template"] == "X50_2x2d"
    assert (tmp_path / "model_final.pkl").is_file()
    assert result is None  # launch() returns nothing; main() returns the evaluation

    evaluation = main(cls_args(tiny_opts(folder, tmp_path), resume=True, eval_only=True))
    assert evaluation["top1_err"] == pytest.approx(epochs[-1]["val_top1_err"])


def _stop_at(iteration):
    """A _step that 'kills' the run (KeyboardInterrupt) when it reaches `iteration`."""
    step = ClsTrainer._step

    def killed(self, images, labels):
        if self.iteration == iteration:
            raise KeyboardInterrupt
        return step(self, images, labels)
    return killed


def test_resume_continues_at_saved_iteration(folder, tmp_path, monkeypatch):
    """Killed after iteration 4 (checkpoint at 3, mid-epoch): resume = the uninterrupted run."""
    opts = lambda out: tiny_opts(folder, out, "SOLVER.MAX_ITER", 6)  # noqa: E731
    main(cls_args(opts(tmp_path / "whole")))
    with monkeypatch.context() as m:
        m.setattr(ClsTrainer, "_step", _stop_at(4))
        with pytest.raises(KeyboardInterrupt):
            main(cls_args(opts(tmp_path / "killed")))
    assert CheckpointFiles(tmp_path / "killed").last().endswith("model_0000003.pth")

    resumed = {}
    original = ClsTrainer.resume_or_load

    def spy(self, resume=True):
        path = original(self, resume)
        resumed["iteration"] = self.iteration
        return path
    monkeypatch.setattr(ClsTrainer, "resume_or_load", spy)
    main(cls_args(opts(tmp_path / "killed"), resume=True))
    assert resumed["iteration"] == 3
    whole = load_checkpoint(tmp_path / "whole" / "model_final.pth")
    again = load_checkpoint(tmp_path / "killed" / "model_final.pth")
    assert again["iteration"] == 6
    for key, value in whole["model"].items():  # same data order, lr and RNG: same weights
        assert torch.equal(value, again["model"][key]), key


def test_crash_during_checkpoint_write_keeps_last(folder, tmp_path, monkeypatch):
    files = CheckpointFiles(tmp_path)
    files.save("model_0000001.pth", {"iteration": 1, "model": {"w": torch.ones(2)}})

    def crash(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        files.save("model_0000002.pth", {"iteration": 2, "model": {"w": torch.zeros(2)}})
    monkeypatch.undo()
    assert files.last() == str(tmp_path / "model_0000001.pth")
    assert load_checkpoint(files.last())["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]


def test_max_to_keep(tmp_path):
    files = CheckpointFiles(tmp_path, max_to_keep=2)
    for it in (1, 2, 3):
        files.save(f"model_{it:07d}.pth", {"iteration": it})
    files.save("model_final.pth", {"iteration": 4})
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000002.pth", "model_0000003.pth", "model_final.pth"]
