"""tools/pretrain_cls.py on a tiny folder: training, metrics.json, checkpoints, exact resume."""
import json
import math
import shutil

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from resnext_det.checkpoint import read_weights
from resnext_det.checkpoint import checkpointer as checkpointer_module
from resnext_det.classification import ClsTrainer, build_cls_model, evaluate_only, get_cls_cfg, main
from resnext_det.classification.solver import build_param_scheduler
from resnext_det.classification.checkpoint import build_cls_checkpointer
from resnext_det.engine.amp import CPUAutocastTrainer
from resnext_det.utils.plots import plot_training_curves, read_metrics, series
from tests.helpers import captured, load_tool, training_records

from .helpers import by_hand_val_metrics, cls_args, tiny_cfg, tiny_opts, write_folder

# What detectron2's SimpleTrainer, IterationTimer, LRScheduler and CommonMetricPrinter put
# in every training record of detection's metrics.json once the timer has warmed up.
DETECTRON2_TRAINING_KEYS = {"iteration", "total_loss", "lr", "time", "data_time",
                            "rank_data_time", "eta_seconds"}


def load(path):
    return read_weights(path).obj


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"))


def test_train_few_iterations(folder, tmp_path):
    """18 images / 4 per batch = 4.5 iterations per epoch: 2 epochs are 9 iterations."""
    tool = load_tool("pretrain_cls")
    opts = tiny_opts(folder, tmp_path, "SOLVER.MAX_TO_KEEP", 2)
    assert tool.run(["--num-gpus", "1"] + opts) is None  # launch() returns nothing
    records = read_metrics(tmp_path / "metrics.json")
    assert [r["iteration"] for r in records] == list(range(10))  # LOG_PERIOD 1; final eval at 9
    train = records[:9]
    assert all(math.isfinite(r["total_loss"]) and r["[metric]images_per_s"] > 0 for r in train)
    assert [r["epoch"] for r in train] == pytest.approx([(i + 1) / 4.5 for i in range(9)])
    # val every round(4.5) = 4 iterations and at the end; top-5 of 3 classes holds them all
    assert [i for i, _ in series(records, "val/top1_err")] == [3, 7, 9]
    assert records[-1]["val/top5_err"] == 0 and records[-1]["val/images"] == 6
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
    # CHECKPOINT_PERIOD 3 (after iterations 2, 5, 8), MAX_TO_KEEP 2; then model_final
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000005.pth", "model_0000008.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = load(tmp_path / "model_final.pth")
    assert final["iteration"] == 8 and final["trainer"]["iteration"] == 8
    assert final["classes"] == ["blue", "green", "red"]  # sorted folder names
    assert final["resnext_det"]["template"] == "X50_2x2d" and len(final["rng"]) == 1
    assert load(tmp_path / "model_final.pkl")["resnext_det"]["template"] == "X50_2x2d"
    assert plot_training_curves(tmp_path / "metrics.json", tmp_path / "curves.png")

    # the final evaluation and --eval-only: model_final.pth's errors and loss, by hand
    evaluation = main(cls_args(tiny_opts(folder, tmp_path), resume=True, eval_only=True))
    expected = by_hand_val_metrics(tiny_cfg(folder, tmp_path), folder, tmp_path / "model_final.pth")
    for got in (evaluation, {k[4:]: v for k, v in records[-1].items() if k.startswith("val/")}):
        assert got["images"] == expected["images"]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert got["top1_err"] == pytest.approx(expected["top1_err"])


def test_the_loader_workers_stop_with_the_training(folder, tmp_path):
    """Persistent workers left to the garbage collector took torch's 5 s join timeout each
    in a process that goes on (tools/pretrain_then_detect.py): no reference cycle holds the
    trainer, so none outlives main(), with the collector off."""
    import gc
    import multiprocessing

    gc.disable()
    try:
        main(cls_args(tiny_opts(folder, tmp_path, "DATA.NUM_WORKERS", 2, "SOLVER.MAX_EPOCHS", 1)))
    finally:
        gc.enable()
    assert multiprocessing.active_children() == []


def test_metrics_have_detections_record_shape(folder, tmp_path):
    """detectron2's JSONWriter lines: sorted keys, "iteration", detection's training keys."""
    main(cls_args(tiny_opts(folder, tmp_path, "SOLVER.MAX_ITER", 5, "TEST.EVAL_PERIOD", 0)))
    lines = (tmp_path / "metrics.json").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert lines == [json.dumps(r, sort_keys=True) for r in records]
    assert all(DETECTRON2_TRAINING_KEYS <= set(r) for r in records[2:5])  # timer warm-up: 2
    assert all(isinstance(v, float) for r in records for k, v in r.items() if k != "iteration")
    assert set(records[-1]) == {"iteration", "val/top1_err", "val/top5_err", "val/loss",
                                "val/images", "val/skipped"}


def test_amp_on_the_cpu_trains_in_bfloat16(folder, tmp_path):
    """SOLVER.AMP.ENABLED on the CPU: detection's CPUAutocastTrainer, bf16 convolutions."""
    trainer = ClsTrainer(tiny_cfg(folder, tmp_path, "SOLVER.AMP.ENABLED", True,
                                  "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0))
    assert isinstance(trainer._trainer, CPUAutocastTrainer)
    dtypes = []
    trainer.net.res3[0].conv2.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    trainer.train()  # 2 iterations, then the final evaluation (float32, no autocast)
    assert dtypes == [torch.bfloat16] * 2 + [torch.float32] * len(dtypes[2:]) and dtypes[2:]
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)

def test_a_tiny_run_learns(tmp_path):
    """3 colour classes (chance: 66.7% top-1 error); a broken loss, lr or labels stay there."""
    data = write_folder(tmp_path / "data", per_class=(12, 4))
    # lr 0.01 for 20 epochs: 0% error with SEED 0-3 on 1 and 2 threads (lr 0.02 for 10
    # epochs, the old setting, missed at some seeds and thread counts)
    result = main(cls_args(tiny_opts(
        data, tmp_path / "out", "SOLVER.BASE_LR", 0.01, "SOLVER.REFERENCE_BATCH", 4,
        "SOLVER.MAX_EPOCHS", 20, "SOLVER.STEPS", "(16,)", "SOLVER.CHECKPOINT_PERIOD", 0,
        "TEST.EVAL_PERIOD", 0, "LOG_PERIOD", 20)))
    assert result["images"] == 12 and result["top1_err"] <= 100 / 12 + 1e-6  # at most 1 wrong


def _killed_at(iteration):
    """A run_step that 'kills' the run (KeyboardInterrupt) when it reaches `iteration`."""
    step = ClsTrainer.run_step

    def killed(self):
        if self.iter == iteration:
            raise KeyboardInterrupt
        return step(self)
    return killed


# a loader worker draws augmentations in its own process, restarted by the resumed run; a
# SEED < 0 draws the data order's seed at each start
@pytest.mark.parametrize("extra", [(), ("DATA.NUM_WORKERS", 1), ("SEED", -1)])
def test_resume_continues_the_epoch_exactly(folder, tmp_path, monkeypatch, extra):
    """Killed at iteration 4 (checkpoint after 2, mid-epoch): resumed == uninterrupted, bitwise."""
    if extra and extra[0] == "SEED":  # both first runs draw the same order and init
        monkeypatch.setattr("detectron2.utils.comm.shared_random_seed", lambda: 1234)
        monkeypatch.setattr("detectron2.engine.defaults.seed_all_rng", lambda seed: seed_all_rng(0))
    opts = lambda out: tiny_opts(folder, out, "SOLVER.MAX_ITER", 7, *extra)  # noqa: E731
    main(cls_args(opts(tmp_path / "whole")))
    with monkeypatch.context() as m:
        m.setattr(ClsTrainer, "run_step", _killed_at(4))
        with pytest.raises(KeyboardInterrupt):
            main(cls_args(opts(tmp_path / "killed")))
    assert (tmp_path / "killed" / "last_checkpoint").read_text() == "model_0000002.pth"

    started = {}
    original = ClsTrainer.resume_or_load
    if extra and extra[0] == "SEED":  # the resumed run draws another
        monkeypatch.setattr("detectron2.utils.comm.shared_random_seed", lambda: 99)

    def spy(self, resume=True):
        original(self, resume)
        started.update(iteration=self.start_iter, index=self.sampler.start)
    monkeypatch.setattr(ClsTrainer, "resume_or_load", spy)
    main(cls_args(opts(tmp_path / "killed"), resume=True))
    assert started == {"iteration": 3, "index": 12}  # 3 batches of 4 into the first epoch
    whole, again = (load(tmp_path / run / "model_final.pth") for run in ("whole", "killed"))
    assert again["iteration"] == 6
    for key, value in whole["model"].items():  # same data order, lr and RNG: same weights
        assert torch.equal(value, again["model"][key]), key
    # metrics.json: the killed run's records after its checkpoint were cut, so the file
    # holds each iteration once; and its medians (total_loss, over the last 20 iterations)
    # went on from the checkpoint's (they restarted with the resumed run: other values)
    records = [training_records(tmp_path / run) for run in ("whole", "killed")]
    assert records[0] == records[1] and [r["iteration"] for r in records[0]] == list(range(7))


def test_crash_during_checkpoint_write_keeps_last(folder, tmp_path, monkeypatch):
    cfg = tiny_cfg(folder, tmp_path)
    checkpointer = build_cls_checkpointer(cfg, build_cls_model(cfg, 3))
    checkpointer.save("model_0000001", iteration=1)

    def crash(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    monkeypatch.setattr(checkpointer_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save("model_0000002", iteration=2)
    monkeypatch.undo()
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    assert load(checkpointer.get_checkpoint_file())["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]


def test_evaluation_without_weights_is_an_error(tmp_path):
    """Evaluating the random initialization is refused, with or without --resume."""
    from resnext_det.config.errors import ConfigError

    folder = write_folder(tmp_path / "data")
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"MODEL.WEIGHTS='' .*a checkpoint to evaluate"):
            main(cls_args(tiny_opts(folder, tmp_path / "out", "MODEL.WEIGHTS", ""),
                          resume=resume, eval_only=True))


def test_evaluation_needs_the_checkpoints_classes(tmp_path):
    """--eval-only builds the classifier from the validation folder: one with other classes
    than training's is refused (its labels would mean other classes, or the classifier would
    keep its random start), for a training checkpoint (names) and model_final.pkl (count)."""
    from resnext_det.checkpoint import WeightsMismatchError
    from resnext_det.data.checks import DatasetError

    folder = write_folder(tmp_path / "data")
    main(cls_args(tiny_opts(folder, tmp_path / "run", "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0)))
    renamed = tmp_path / "renamed"
    shutil.copytree(folder, renamed)
    (renamed / "val" / "green").rename(renamed / "val" / "yellow")
    fewer = tmp_path / "fewer"
    shutil.copytree(folder, fewer)
    shutil.rmtree(fewer / "val" / "green")

    def evaluate(data, weights):
        opts = tiny_opts(data, tmp_path / "eval", "MODEL.WEIGHTS", tmp_path / "run" / weights)
        return main(cls_args(opts, eval_only=True))

    assert evaluate(folder, "model_final.pth")["images"] == 6  # the training's classes: fine
    with pytest.raises(DatasetError, match=r"model_final.pth.*only in the checkpoint: "
                       r"\['green'\], only in the validation folder: \['yellow'\]"):
        evaluate(renamed, "model_final.pth")
    with pytest.raises(DatasetError, match=r"only in the checkpoint: \['green'\], only in the "
                       r"validation folder: \[\]"):
        evaluate(fewer, "model_final.pth")
    with pytest.raises(WeightsMismatchError, match=r"(?s)model_final.pkl: these weights do not fill "
                       r"the model.*'linear.weight': checkpoint \(3, \d+\), model \(2, \d+\).*"
                       r"a classifier of the 2 classes"):
        evaluate(fewer, "model_final.pkl")
    trunk = torch.load(tmp_path / "run" / "model_final.pth", weights_only=False)
    trunk["model"] = {k: v for k, v in trunk["model"].items() if not k.startswith("linear.")}
    del trunk["classes"]
    torch.save(trunk, tmp_path / "run" / "trunk.pth")
    with pytest.raises(WeightsMismatchError, match=r"(?s)trunk.pth: these weights do not fill the "
                       r"model.*'linear.weight': not in the checkpoint"):
        evaluate(folder, "trunk.pth")
    with pytest.raises(DatasetError,
                       match=r"only in train: \['green'\], only in val: \['yellow'\]"):
        main(cls_args(tiny_opts(renamed, tmp_path / "again", "SOLVER.MAX_ITER", 1)))


def test_resume_on_other_classes_is_an_error(tmp_path):
    """A resumed run whose class folders were renamed since (same count: the checkpoint
    fits) would go on with each label meaning another class."""
    from resnext_det.data.checks import DatasetError

    folder = write_folder(tmp_path / "data")
    opts = tiny_opts(folder, tmp_path / "run", "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0)
    main(cls_args(opts))
    for split in ("train", "val"):
        (folder / split / "green").rename(folder / split / "yellow")
    with pytest.raises(DatasetError, match=r"model_final.pth: the classes differ \(only in the "
                       r"checkpoint: \['green'\], only in the data: \['yellow'\]\)"):
        main(cls_args(opts[:-4] + ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0"], resume=True))


def test_a_new_run_never_replaces_an_earlier_runs_detection_weights(tmp_path):
    """A folder where only model_final.pkl was kept (all a detector needs): a new run
    replaced it without a word; now the earlier-run error, the file unchanged."""
    from resnext_det.config.errors import ConfigError

    folder = write_folder(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    (out / "model_final.pkl").write_bytes(b"an earlier run's backbone")
    (out / "config.yaml").write_bytes(b"# the earlier run's config\n")
    with pytest.raises(ConfigError, match=r"without an earlier run's checkpoints, .*it holds "
                       r"model_final.pkl.*Pass --resume"):
        main(cls_args(tiny_opts(folder, out, "SOLVER.MAX_ITER", 1)))
    assert (out / "model_final.pkl").read_bytes() == b"an earlier run's backbone"
    assert (out / "config.yaml").read_bytes() == b"# the earlier run's config\n"


def test_resume_with_another_optimizer_or_batch_is_an_error(folder, tmp_path):
    """torch's Optimizer.load_state_dict puts back the checkpoint's momentum and weight decay,
    detectron2's LRMultiplier its base lr: a run resumed with SOLVER.BASE_LR 10x lower went
    on at the old lr, one with half the batch at the old lr, from another place in the data."""
    from detectron2.solver import LRMultiplier

    from resnext_det.config.errors import ConfigError

    main(cls_args(tiny_opts(folder, tmp_path, "SOLVER.MAX_ITER", 4, "TEST.EVAL_PERIOD", 0)))
    saved = load(tmp_path / "model_final.pth")
    state = saved["trainer"]["_trainer"]["optimizer"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1)) for _ in
                                 state["param_groups"][0]["params"]], lr=1.0)
    optimizer.load_state_dict(state)  # what torch puts back from the checkpoint
    scheduler = LRMultiplier(optimizer, build_param_scheduler(get_cls_cfg().SOLVER), 10)
    scheduler.load_state_dict(saved["trainer"]["hooks"]["LRScheduler"])
    trained = {"BASE_LR": scheduler.base_lrs[0] * 256 / 4,  # REFERENCE_BATCH / IMS_PER_BATCH
               "WEIGHT_DECAY": optimizer.param_groups[0]["weight_decay"], "IMS_PER_BATCH": 4}
    assert trained["BASE_LR"] == pytest.approx(0.1) and trained["WEIGHT_DECAY"] == 1e-4
    for key, value in (("BASE_LR", 0.01), ("WEIGHT_DECAY", 0.0), ("IMS_PER_BATCH", 2)):
        opts = tiny_opts(folder, tmp_path, f"SOLVER.{key}", value, "TEST.EVAL_PERIOD", 0)
        with pytest.raises(ConfigError, match=rf"SOLVER.{key}={value} is not valid: expected "
                           rf"{trained[key]!r}, the value .*model_final.pth was trained with"):
            main(cls_args(opts, resume=True))
    assert load(tmp_path / "model_final.pth")["iteration"] == 3  # nothing trained


def test_resume_past_the_end_is_an_error(folder, tmp_path):
    """--resume with SOLVER.MAX_ITER below the checkpoint's trained nothing and wrote
    model_final.pkl again; now the error names the key."""
    from resnext_det.config.errors import ConfigError

    main(cls_args(tiny_opts(folder, tmp_path, "SOLVER.MAX_ITER", 4, "TEST.EVAL_PERIOD", 0)))
    with pytest.raises(ConfigError, match=r"SOLVER.MAX_ITER=2 is not valid: expected an end at "
                       r"or after iteration 4, where .*model_final.pth resumes"):
        main(cls_args(tiny_opts(folder, tmp_path, "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0),
                      resume=True))


def test_a_pretraining_that_diverges_is_one_error_line(folder, tmp_path, capsys):
    """detectron2's "Loss became infinite or NaN" holds the loss dict on a second line, and
    its training loop logged the error's traceback twice (a record's write, the loop)."""
    with captured("detectron2.engine.train_loop", tracebacks=True) as logged:
        with pytest.raises(SystemExit) as exit_:
            load_tool("pretrain_cls").run(tiny_opts(folder, tmp_path, "SOLVER.BASE_LR", 1e30))
    assert exit_.value.code == 2
    assert any("FloatingPointError" in message for message in logged)
    assert not any("Traceback" in message for message in logged)
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: the training diverged (Loss became infinite or NaN at ")
    assert "; loss_dict = {'loss_cls': " in error and "Lower SOLVER.BASE_LR" in error


def test_evaluation_with_no_readable_image_is_an_error(tmp_path):
    """Every validation image bad (skipped): the run reported 100% errors on 0 images."""
    from resnext_det.data.checks import DatasetError

    folder = write_folder(tmp_path / "data")
    main(cls_args(tiny_opts(folder, tmp_path / "run", "SOLVER.MAX_ITER", 1, "TEST.EVAL_PERIOD", 0)))
    for image in (folder / "val").glob("*/*.png"):
        image.write_bytes(b"garbage")
    opts = tiny_opts(folder, tmp_path / "eval", "MODEL.WEIGHTS",
                     tmp_path / "run" / "model_final.pth")
    with pytest.raises(DatasetError, match=r"no validation image could be read \(6 left out"):
        main(cls_args(opts, eval_only=True))


def test_resume_redoes_the_epoch_evaluation_a_kill_cut_short(folder, tmp_path):
    """Killed during the evaluation after the first epoch's checkpoint: the resumed run went
    on from that checkpoint and the epoch's evaluation was never recorded, nor the training
    record of that iteration (written after it). Now it is done first: that checkpoint's
    loss and errors, by hand (by_hand_val_metrics); the final one model_final.pth's."""
    out = tmp_path / "run"
    extra = ("SOLVER.CHECKPOINT_PERIOD", 0, "TEST.EVAL_PERIOD", 1, "SOLVER.MAX_EPOCHS", 2,
             "SOLVER.STEPS", "()")
    opts = tiny_opts(folder, out, *extra)
    main(cls_args(opts))

    def evaluations():
        """[(iteration, {"loss", "top1_err", "images"}), ...] in metrics.json's order."""
        records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
        return [(r["iteration"], {k: r[f"val/{k}"] for k in ("loss", "top1_err", "images")})
                for r in records if "val/top1_err" in r]

    uninterrupted, training = evaluations(), training_records(out)
    first = uninterrupted[0][0]  # the first epoch's evaluation, after its checkpoint
    assert len(uninterrupted) >= 2 and (out / f"model_{first:07d}.pth").is_file()
    for path in out.glob("model_*.pth"):
        if path.name != f"model_{first:07d}.pth":
            path.unlink()
    (out / "last_checkpoint").write_text(f"model_{first:07d}.pth")
    kept = [line for line in (out / "metrics.json").read_text().splitlines()
            if json.loads(line)["iteration"] < first]  # the kill came before the record
    (out / "metrics.json").write_text("".join(line + "\n" for line in kept))
    main(cls_args(opts, resume=True))
    resumed = evaluations()
    assert [i for i, _ in resumed] == [i for i, _ in uninterrupted]
    assert training_records(out) == training  # the checkpoint's own one put back from it
    cfg = tiny_cfg(folder, out, *extra)
    for (_, got), weights in zip((resumed[0], resumed[-1]),
                                         (f"model_{first:07d}.pth", "model_final.pth")):
        expected = by_hand_val_metrics(cfg, folder, out / weights)
        assert got["images"] == expected["images"] == 6
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5), weights
        assert got["top1_err"] == pytest.approx(expected["top1_err"]), weights


@pytest.mark.parametrize("key, value", [("LOG_PERIOD", 0), ("TEST.EVAL_PERIOD", -1),
                                        ("DATA.NUM_WORKERS", -1), ("TEST.IMS_PER_BATCH", 0)])
def test_the_trainer_checks_its_keys_when_built(folder, tmp_path, key, value):
    """ClsTrainer used directly (not through main) checks what main's users have checked
    (a LOG_PERIOD of 0 was a ZeroDivisionError at the first iteration)."""
    from resnext_det.config.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ClsTrainer(tiny_cfg(folder, tmp_path, key, value))


@pytest.mark.parametrize("key, value", [("MODEL.RESNETS.NORM", "FrozenBN"),
                                        ("MODEL.ARCH", "vgg")])
def test_a_bad_model_key_stops_before_the_data_is_listed(tmp_path, key, value):
    """Listing ImageNet's folders (1.28M files) came first, the model's keys after it: here
    a missing DATA.ROOT would answer first if the folders were read before the model key."""
    from resnext_det.config.errors import ConfigError

    cfg = tiny_cfg(tmp_path / "no-such-folder", tmp_path / "out", key, value)
    for build in (lambda: ClsTrainer(cfg), lambda: evaluate_only(cfg)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build()
