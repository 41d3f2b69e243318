"""Each training key of a Python config, set away from its default, trains in tools/train_net.py
as in detectron2's own lazy loop.

The peer is the body of detectron2's tools/lazyconfig_train_net.py (do_train), composed here
from detectron2's classes: instantiate model, optimizer and loader, create_ddp_model,
SimpleTrainer, DetectionCheckpointer, IterationTimer / LRScheduler / PeriodicCheckpointer /
EvalHook / PeriodicWriter, resume_or_load, train. The config is loaded for it by detectron2's
LazyConfig, the overrides applied by its apply_overrides. From one seed both train the tiny
digits config 2 iterations, with our speed-ups off (train.fast_training "" and train.roi_align
"torchvision": detectron2's function), and must end in the same weights bit for bit, write the
same files and the same metrics.json records; each key must change the peer's outcome.
Deliberate differences, documented in the README, are asserted as such: evaluations keep
torch's RNG, train.init_checkpoint of another library's layout is converted on load, and the
speed-ups give the same weights up to float rounding (the measured bound is below).
"""
import json
import pickle

import pytest
import torch
import torchvision
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.env import seed_all_rng
from fvcore.common.param_scheduler import (CosineParamScheduler, MultiStepParamScheduler,
                                           StepWithFixedGammaParamScheduler)

from resnext_det.config.errors import ConfigError
from resnext_det.engine.lazy import LazySetup, do_train
from tests.engine.test_lazy import BOTTOM_UP, DIGITS, TINY_DATA, TINY_MODEL, _shrunk, _user_error

BASE = [*TINY_MODEL, *TINY_DATA, "train.max_iter=2", "lr_multiplier.warmup_length=0.5",
        "train.device=cpu", "train.fast_training=", "train.roi_align=torchvision"]


def _detectron2_train(cfg):
    """tools/lazyconfig_train_net.py's do_train (detectron2's repository; not installed with
    the package), from detectron2's classes, without --resume."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)

    def test():
        if "evaluator" in cfg.dataloader:
            return inference_on_dataset(model, instantiate(cfg.dataloader.test),
                                        instantiate(cfg.dataloader.evaluator))
        return None

    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer),
        hooks.EvalHook(cfg.train.eval_period, test),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period),
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=False)
    trainer.train(0, cfg.train.max_iter)


def _outcome(folder):
    """(final weights, files written, metrics.json's (iteration, keys) per record). Not
    compared: tensorboard's event file (its name holds the time, host and process id) and
    our conversion cache (converted_weights/, README "Pretrained weights")."""
    checkpoint = torch.load(folder / "model_final.pth", weights_only=False)
    files = sorted(p.name for p in folder.iterdir() if p.name != "converted_weights"
                   and not p.name.startswith("events.out.tfevents."))
    records = [json.loads(line) for line in (folder / "metrics.json").read_text().splitlines()]
    return checkpoint, files, [(r["iteration"], sorted(r)) for r in records]


def _train(who, folder, overrides=(), edit=None, evaluate=False, config=None):
    """Train with our lazy path ("ours") or detectron2's loop ("peer") from seed 0; the
    outcome. `config` (folder -> cfg) replaces loading the digits config with BASE."""
    if config:
        cfg = LazyConfig.apply_overrides(config(folder), list(overrides))
    else:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(DIGITS),
                                         [*BASE, *overrides, f"train.output_dir={folder}"])
    if not evaluate:
        del cfg.dataloader["evaluator"]
    if edit:
        edit(cfg)
    seed_all_rng(0)
    if who == "ours":
        do_train(LazySetup(cfg))
    else:
        _detectron2_train(cfg)
    return _outcome(folder)


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_as_detectron2(ours, peer):
    """The same weights bit for bit, files and records; our checkpoint holds detectron2's
    entries (and the classes, input and solver it adds: engine.checks.mark_checkpoints)."""
    assert _same_weights(ours[0]["model"], peer[0]["model"])
    assert ours[1] == peer[1] and ours[2] == peer[2]
    assert set(peer[0]) <= set(ours[0])


def _differs(a, b):
    return not _same_weights(a[0]["model"], b[0]["model"]) or a[1:] != b[1:]


@pytest.fixture(scope="module")
def default_run(datasets_root, tmp_path_factory):
    """The peer's outcome of BASE (ours equals it: test_the_default_trains_as_detectron2)."""
    return _train("peer", tmp_path_factory.mktemp("default_peer"))


def _adamw(cfg):
    cfg.optimizer = model_zoo.get_config("common/optim.py").AdamW  # lr 1e-4, decay 0.1


def _cosine(cfg):
    cfg.lr_multiplier = L(CosineParamScheduler)(start_value=1.0, end_value=0.1)


def _multistep(cfg):
    cfg.lr_multiplier.scheduler = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[1, 2])


def _random_augmentations(cfg):
    """Drawn from numpy's global RNG in the loader: a random size of three, random flips."""
    cfg.dataloader.train.mapper.augmentations = [
        L(T.ResizeShortestEdge)(short_edge_length=[48, 56, 64], max_size=64, sample_style="choice"),
        L(T.RandomFlip)(horizontal=True)]


KEYS = {  # name: (overrides, edit of the loaded config)
    "optimizer.lr": (["optimizer.lr=0.05"], None),
    "optimizer.momentum": (["optimizer.momentum=0.5"], None),
    "optimizer.weight_decay": (["optimizer.weight_decay=0.01"], None),
    "optimizer.params.weight_decay_norm": (["optimizer.params.weight_decay_norm=0.01"], None),
    "optimizer.params.bias_lr_factor": (["optimizer.params.bias_lr_factor=2.0",  # base_lr: the lr
                                         "+optimizer.params.base_lr=0.02"], None),
    "optimizer=AdamW": ([], _adamw),
    # iteration 1 is at 0.5 of the run: in a warm-up of 0.9, constant 0.5 instead of linear
    "lr_multiplier.warmup_*": (["lr_multiplier.warmup_length=0.9",
                                "lr_multiplier.warmup_factor=0.5",
                                "lr_multiplier.warmup_method=constant"], None),
    "lr_multiplier=Cosine": ([], _cosine),
    "lr_multiplier.scheduler=MultiStep": ([], _multistep),
    # files and records: model_0000001.pth alone kept; a record of each iteration
    "train.checkpointer, train.log_period": (["train.checkpointer.period=1",
                                              "train.checkpointer.max_to_keep=1",
                                              "train.log_period=1"], None),
    "dataloader.train.total_batch_size": (["dataloader.train.total_batch_size=3"], None),
    "dataloader.train.mapper.augmentations": ([], _random_augmentations),
    "dataloader.train.mapper.image_format": (["dataloader.train.mapper.image_format=BGR"], None),
    "model.backbone.bottom_up.freeze_at": ([f"{BOTTOM_UP}freeze_at=2"], None),
    "model.pixel_mean/std": (["model.pixel_mean=[100.0,110.0,120.0]",
                              "model.pixel_std=[50.0,60.0,70.0]"], None),
}


@pytest.mark.parametrize("key", list(KEYS))
def test_a_training_key_trains_as_in_detectron2(key, default_run, tmp_path):
    overrides, edit = KEYS[key]
    peer = _train("peer", tmp_path / "peer", overrides, edit)
    assert _differs(peer, default_run), f"{key} changes nothing in detectron2's loop"
    _assert_as_detectron2(_train("ours", tmp_path / "ours", overrides, edit), peer)


def test_a_step_schedule_ends_its_run(default_run, tmp_path):
    """fvcore's step schedules take the value at the end of the run (where 1.0, asked by
    detectron2's LRMultiplier after the last step) one past their values: detectron2's loop
    stopped on an IndexError before model_final.pth. Ours trains as detectron2 does with the
    MultiStep schedule of the same values (checked at each iteration)."""
    def step(cfg):
        cfg.lr_multiplier.scheduler = L(StepWithFixedGammaParamScheduler)(
            base_value=1.0, gamma=0.1, num_decays=1, num_updates=2)

    step_schedule = StepWithFixedGammaParamScheduler(base_value=1.0, gamma=0.1, num_decays=1,
                                                     num_updates=2)
    same = MultiStepParamScheduler(values=[1.0, 0.1], milestones=[1], num_updates=2)
    assert [step_schedule(i / 2) for i in range(2)] == [same(i / 2) for i in range(2)]
    with pytest.raises(IndexError):
        _train("peer", tmp_path / "step_peer", edit=step)

    def multistep(cfg):
        cfg.lr_multiplier.scheduler = L(MultiStepParamScheduler)(values=[1.0, 0.1],
                                                                 milestones=[1], num_updates=2)

    peer = _train("peer", tmp_path / "peer", edit=multistep)
    assert _differs(peer, default_run)
    _assert_as_detectron2(_train("ours", tmp_path / "ours", edit=step), peer)


def test_the_default_trains_as_detectron2(default_run, tmp_path):
    _assert_as_detectron2(_train("ours", tmp_path), default_run)
    assert default_run[1] == ["last_checkpoint", "metrics.json", "model_final.pth"]


def test_evaluations_leave_the_training_as_it_was(default_run, tmp_path):
    """train.eval_period 1: detectron2's evaluation after iteration 0 draws its loader's seed
    from torch's RNG and so changes iteration 1's sampling; ours keeps the RNG (README
    "Evaluations do not change the training"): the weights of a run without evaluations,
    the records (evaluation results at the same iterations, same keys) of detectron2's."""
    overrides = ["train.eval_period=1"]
    peer = _train("peer", tmp_path / "peer", overrides, evaluate=True)
    ours = _train("ours", tmp_path / "ours", overrides, evaluate=True)
    assert not _same_weights(peer[0]["model"], default_run[0]["model"])
    assert _same_weights(ours[0]["model"], default_run[0]["model"])
    assert ours[2] == peer[2] and sum("bbox/AP" in keys for _, keys in peer[2]) == 2


def test_speed_ups_train_as_detectron2_up_to_rounding(default_run, tmp_path):
    """The digits config's own train.roi_align "sparse" and train.fast_training "auto"
    (channels_last on AVX-512 CPUs, "fold" elsewhere, which changes nothing in a model
    without frozen norms): detectron2's weights within 2e-5. Measured after 2 iterations on
    an AVX-512 CPU (weights up to 2.3 in magnitude): 1.4e-6, of which the sparse ROIAlign
    alone 1.5e-8; the rest is channels_last's rounding."""
    ours = _train("ours", tmp_path, ["train.roi_align=sparse", "train.fast_training=auto"])
    peer = default_run[0]["model"]
    assert max((ours[0]["model"][k] - peer[k]).abs().max().item() for k in peer) < 2e-5
    assert ours[1:] == default_run[1:]


def test_a_shipped_config_trains_as_in_detectron2(datasets_root, tmp_path):
    """The Faster R-CNN X101 config at test size (FrozenBN, frozen stem and res2; _shrunk),
    its frozen norms not folded (with folding, an untrained RPN's near-equal scores swap in
    the top-k and the sampled regions differ after rounding; README "FAST_TRAINING")."""
    def config(folder):
        return _shrunk("faster_rcnn_X101_32x8d_FPN_1x.py", folder)

    overrides = ["train.max_iter=2", "train.device=cpu", "train.fast_training="]
    peer = _train("peer", tmp_path / "peer", overrides, config=config)
    _assert_as_detectron2(_train("ours", tmp_path / "ours", overrides, config=config), peer)


def _torchvision_layout_for_detectron2(state_dict):
    """A torchvision ResNet state dict renamed as detectron2's tools/convert-torchvision-to-d2.py
    renames it (layer<i> -> res<i+1>, bn<i> -> conv<i>.norm, downsample.0/.1 -> shortcut /
    shortcut.norm, the rest under stem.), for DetectionCheckpointer's name matching."""
    def renamed(key):
        key = key if "layer" in key else "stem." + key
        for i in (1, 2, 3, 4):
            key = key.replace(f"layer{i}", f"res{i + 1}")
        for i in (1, 2, 3):
            key = key.replace(f"bn{i}", f"conv{i}.norm")
        return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")

    model = {renamed(k): v.numpy() for k, v in state_dict.items()}
    return {"model": model, "__author__": "torchvision", "matching_heuristics": True}


def test_a_torchvision_init_checkpoint_trains_as_its_detectron2_conversion(default_run, tmp_path):
    """train.init_checkpoint: a torchvision ResNeXt file as torchvision saves it (converted on
    load, README "Weights of any format") trains as detectron2 trains that file converted by
    its own rules. Full widths (torchvision's stem has 64 channels), C=2, d=2."""
    tv = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3],
                                   groups=2, width_per_group=2)
    generator = torch.Generator().manual_seed(0)
    for norm in (m for m in tv.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        for tensor in (norm.weight, norm.running_var):  # trained-looking norms, not 1 and 0
            tensor.data.uniform_(0.5, 1.5, generator=generator)
        for tensor in (norm.bias, norm.running_mean):
            tensor.data.uniform_(-0.5, 0.5, generator=generator)
    torch.save(tv.state_dict(), tmp_path / "resnext50_2x2d.pth")
    with open(tmp_path / "resnext50_2x2d.pkl", "wb") as f:
        pickle.dump(_torchvision_layout_for_detectron2(tv.state_dict()), f)
    widths = [f"{BOTTOM_UP}stem_out_channels=64", f"{BOTTOM_UP}res2_out_channels=256"]
    peer = _train("peer", tmp_path / "peer",
                  [*widths, f"train.init_checkpoint={tmp_path / 'resnext50_2x2d.pkl'}"])
    scratch = _train("peer", tmp_path / "scratch", widths)
    assert not _same_weights(peer[0]["model"], scratch[0]["model"])
    ours = _train("ours", tmp_path / "ours",
                  [*widths, f"train.init_checkpoint={tmp_path / 'resnext50_2x2d.pth'}"])
    _assert_as_detectron2(ours, peer)


@pytest.fixture
def renamed_digits(datasets_root):
    """digits_train registered again with other class names (d0..d9): the same ids."""
    name = "digits_train_renamed_classes"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("digits_train"))
        MetadataCatalog.get(name).thing_classes = [
            f"d{c}" for c in MetadataCatalog.get("digits_train").thing_classes]
    return name


def test_check_consistency_trains_as_in_detectron2(renamed_digits, default_run, tmp_path):
    """dataloader.train.dataset.check_consistency=False (get_detection_dataset_dicts' argument):
    detectron2 trains datasets whose class names differ; ours stopped on detectron2's bare
    ValueError, the argument left out of its checked load."""
    overrides = [f"dataloader.train.dataset.names=[digits_train,{renamed_digits}]",
                 "+dataloader.train.dataset.check_consistency=False"]
    peer = _train("peer", tmp_path / "peer", overrides)
    assert _differs(peer, default_run)
    _assert_as_detectron2(_train("ours", tmp_path / "ours", overrides), peer)


def test_datasets_with_other_class_names_are_named(renamed_digits, tmp_path, capsys, monkeypatch,
                                                   datasets_root):
    """With the check on, detectron2 stops on a bare ValueError; tools/train_net.py on one
    line naming the datasets, their classes and both fixes."""
    names = f"dataloader.train.dataset.names=[digits_train,{renamed_digits}]"
    cfg = LazyConfig.apply_overrides(LazyConfig.load(DIGITS),
                                     [*BASE, names, f"train.output_dir={tmp_path / 'peer'}"])
    with pytest.raises(ValueError, match="Datasets have different metadata 'thing_classes'"):
        _detectron2_train(cfg)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    error = _user_error(capsys, *BASE, names, f"train.output_dir={tmp_path / 'ours'}")
    assert (f"dataloader.train.dataset.names=('digits_train', '{renamed_digits}'): "
            f"'{renamed_digits}' names its classes ['d0', 'd1'") in error
    assert "dataloader.train.dataset.check_consistency=False" in error


def test_check_consistency_must_be_a_bool(renamed_digits, tmp_path):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(DIGITS), [
        *BASE, f"train.output_dir={tmp_path}", "+dataloader.train.dataset.check_consistency=no"])
    with pytest.raises(ConfigError) as error:
        LazySetup(cfg)
    assert "dataloader.train.dataset.check_consistency='no' is not valid" in str(error.value)
