"""Python configs (configs/lazy/, detectron2's LazyConfig) and tools/train_net.py's lazy path.

Each shipped config builds the model of its YAML twin (parameter names, shapes, module
types, frozen stages and, from one seed, the backbone's outputs; both built for real) and
the parameters of detectron2's own builder; each trains on the digits set (shrunk in
Python); the digits config trains, resumes and evaluates through the command line; bad
overrides and arguments are ConfigErrors naming the lazy key.
"""
import copy
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg, instantiate
import detectron2.data.transforms as T
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import build_detection_train_loader
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.modeling.poolers import ROIPooler
from detectron2.solver import build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params
from detectron2.utils.env import seed_all_rng

import resnext_det
from resnext_det.config.errors import ConfigError
from resnext_det.data import DIGIT_CLASSES, register_digits
from resnext_det.data.checks import DatasetError
from resnext_det.data.coco_json import register_dataset_args
from resnext_det.engine.lazy import LazySetup, build_checkpointer, build_train_loader, do_train
from resnext_det.engine import Trainer
from resnext_det.engine.amp import CPUAutocastTrainer, build_step_trainer
from resnext_det.engine.lazy import build_model as build_lazy_model
from resnext_det.engine.lazy_config import load_lazy_config
from resnext_det.modeling import build_resnext_backbone
from resnext_det.modeling.lazy import ResNeXt
from resnext_det.modeling.roi_align import SparseROIPooler
from resnext_det.utils.testing import max_rel_error
from tests.helpers import (assert_same_detections, captured, detectron2_detections,
                           load_tool, make_cfg, pycocotools_stats)

ROOT = Path(__file__).resolve().parents[2]
LAZY = ROOT / "configs/lazy"
DIGITS = str(LAZY / "faster_rcnn_X50_digits.py")
BOTTOM_UP = "model.backbone.bottom_up."
TINY_MODEL = [  # the digits config at test size (widths / 16)
    f"{BOTTOM_UP}template=X50_2x2d", f"{BOTTOM_UP}stem_out_channels=8",
    f"{BOTTOM_UP}res2_out_channels=16", "model.backbone.out_channels=16",
    "model.roi_heads.box_head.fc_dims=[32,32]",
    "model.roi_heads.box_predictor.test_score_thresh=0.0",  # an untrained model outputs boxes
]
TINY_DATA = [  # 64 px images, 2 per batch, no worker processes
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    *[f"dataloader.{split}.mapper.augmentations.0.{key}=64"
      for split in ("train", "test") for key in ("short_edge_length", "max_size")],
]

# Each shipped X101 config: detectron2's model zoo YAML of the same model, and the keys
# that make both it and our configs/faster_rcnn_X101_32x8d_FPN_1x.yaml the config's twin.
LSJ_KEYS = ["MODEL.MASK_ON", True, "MODEL.RESNETS.NORM", "SyncBN", "MODEL.FPN.NORM", "SyncBN",
            "MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.RPN.CONV_DIMS", [-1, -1],
            "MODEL.ROI_BOX_HEAD.NUM_CONV", 4, "MODEL.ROI_BOX_HEAD.NUM_FC", 1,
            "MODEL.ROI_BOX_HEAD.NORM", "naiveSyncBN_N", "MODEL.ROI_MASK_HEAD.NORM", "naiveSyncBN_N"]
MASK_ZOO = "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml"
SHIPPED = {
    "faster_rcnn_X101_32x8d_FPN_1x.py": ("COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml", []),
    "mask_rcnn_X101_32x8d_FPN_1x.py": (MASK_ZOO, ["MODEL.MASK_ON", True]),
    "mask_rcnn_X101_32x8d_FPN_100ep_LSJ.py": (MASK_ZOO, LSJ_KEYS),
}


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _types(model, skip="backbone.bottom_up."):
    """Module class names, but under `skip` (detectron2's bottleneck class vs ours)."""
    return {k: type(m).__name__ for k, m in model.named_modules() if not k.startswith(skip)}


def _frozen(model):
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def _numel(model, skip=None):
    """Weights, norm parameters and statistics (FrozenBN keeps its scale as a buffer)."""
    return sum(v.numel() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked") and not (skip and k.startswith(skip)))


def _hyper(model):
    """What a model's shapes do not show: anchors, sampling, NMS, thresholds, input."""
    rpn, heads = model.proposal_generator, model.roi_heads
    return dict(
        anchors=[a.tolist() for a in rpn.anchor_generator.cell_anchors],
        rpn=[rpn.pre_nms_topk, rpn.post_nms_topk, rpn.nms_thresh, rpn.batch_size_per_image,
             rpn.positive_fraction, rpn.box2box_transform.weights, rpn.box_reg_loss_type],
        heads=[heads.batch_size_per_image, heads.positive_fraction, heads.num_classes,
               heads.proposal_matcher.thresholds, heads.box_predictor.test_score_thresh,
               heads.box_predictor.test_nms_thresh, heads.box_predictor.test_topk_per_image,
               heads.box_predictor.box2box_transform.weights, heads.box_predictor.smooth_l1_beta],
        input=[model.input_format, model.pixel_mean.flatten().tolist(),
               model.pixel_std.flatten().tolist()])


def _yacs_cfg(yaml, keys=()):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / yaml))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *keys])
    return cfg


def _yacs_twin(keys):
    """Our YAML config's model (build_resnext_fpn_backbone), built for real."""
    return build_model(_yacs_cfg("faster_rcnn_X101_32x8d_FPN_1x.yaml", keys))


def _same_function(model_a, model_b, x):
    with torch.no_grad():
        a, b = model_a.eval()(x), model_b.eval()(x)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _detectron2_peer(zoo_yaml, keys):
    """detectron2's own model (its build_resnet_fpn_backbone) of its zoo config, whose
    STRIDE_IN_1X1 False says where the stride is ("this is a C2 model")."""
    cfg = model_zoo.get_config(zoo_yaml)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *keys])
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_builds_its_yaml_twin(name):
    zoo_yaml, keys = SHIPPED[name]
    torch.manual_seed(0)
    lazy = instantiate(load_lazy_config(str(LAZY / name)).model)
    torch.manual_seed(0)
    twin = _yacs_twin(keys)
    peer = _detectron2_peer(zoo_yaml, keys)
    assert lazy.backbone.bottom_up.template.name == "X101_32x8d"
    assert _shapes(lazy.backbone) == _shapes(twin.backbone)  # the X101-32x8d FPN backbone
    assert _shapes(lazy) == _shapes(twin) == _shapes(peer)
    assert _types(lazy, skip="-") == _types(twin, skip="-") and _types(lazy) == _types(peer)
    assert _frozen(lazy) == _frozen(twin) and _hyper(lazy) == _hyper(twin)
    assert lazy.input_format == "RGB"
    # from one seed, one function: the stride placement (1x1 or 3x3) shows here, not in shapes
    x = torch.rand(1, 3, 64, 64)
    assert _same_function(lazy.backbone, twin.backbone, x)
    # and detectron2's own ResNeXt FPN given the same weights computes it too
    peer.backbone.load_state_dict(lazy.backbone.state_dict())
    with torch.no_grad():
        ours, theirs = lazy.backbone.eval()(x), peer.backbone.eval()(x)
    assert ours.keys() == theirs.keys()
    assert all(max_rel_error(ours[k], theirs[k]) < 1e-5 for k in ours)
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in peer.parameters())
    with torch.device("meta"):  # torchvision's ResNeXt-101 32x8d: the same numbers but its fc
        tv = torchvision.models.resnext101_32x8d()
    assert _numel(lazy.backbone.bottom_up) == _numel(tv, skip="fc.")


def test_digits_config_is_the_yaml_demo():
    """configs/lazy/faster_rcnn_X50_digits.py trains what configs/demo/faster_rcnn_X50_digits.yaml
    trains: the same model, optimizer parameter groups, lr schedule and input sizes."""
    yaml, lazy_cfg = _yacs_cfg("demo/faster_rcnn_X50_digits.yaml"), load_lazy_config(DIGITS)
    torch.manual_seed(0)
    lazy = instantiate(lazy_cfg.model)
    torch.manual_seed(0)
    twin = build_model(yaml)
    assert _shapes(lazy) == _shapes(twin) and _types(lazy, skip="-") == _types(twin, skip="-")
    assert _frozen(lazy) == _frozen(twin) and _hyper(lazy) == _hyper(twin)
    assert _same_function(lazy.backbone, twin.backbone, torch.rand(1, 3, 64, 64))

    lazy_cfg.optimizer.params.model = lazy
    groups = [instantiate(lazy_cfg.optimizer).param_groups,
              Trainer.build_optimizer(yaml, twin).param_groups]
    # what detectron2's own parameter grouping makes of the twin, with the YAML's SOLVER
    solver = yaml.SOLVER
    default = get_default_optimizer_params(
        twin, base_lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM, bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS)
    expected = [(len(g["params"]), g["lr"], g["weight_decay"], solver.MOMENTUM) for g in default]
    assert [[(len(g["params"]), g["lr"], g["weight_decay"], g["momentum"]) for g in gs]
            for gs in groups] == [expected] * 2
    # and what those groups are, counted here: the norms' scales and shifts without weight
    # decay (WEIGHT_DECAY_NORM 0), every other trainable tensor with it
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    trainable = [p for p in twin.parameters() if p.requires_grad]
    in_norms = [p for m in twin.modules() if isinstance(m, norms)
                for p in m.parameters(recurse=False) if p.requires_grad]
    assert in_norms and solver.WEIGHT_DECAY_NORM == 0 and solver.WEIGHT_DECAY > 0
    assert sorted((n, wd) for n, _, wd, _ in expected) == sorted(
        [(len(trainable) - len(in_norms), solver.WEIGHT_DECAY), (len(in_norms), 0.0)])
    max_iter = lazy_cfg.train.max_iter
    assert max_iter == yaml.SOLVER.MAX_ITER
    lazy_lr = instantiate(lazy_cfg.lr_multiplier)
    yaml_lr = build_lr_scheduler(yaml, Trainer.build_optimizer(yaml, twin))._multiplier
    assert [lazy_lr(i / max_iter) for i in range(max_iter)] == pytest.approx(
        [yaml_lr(i / max_iter) for i in range(max_iter)], abs=1e-12)

    for split, is_train in (("train", True), ("test", False)):
        inputs = [T.AugInput(np.zeros((60, 90, 3), dtype=np.uint8)) for _ in range(2)]
        instantiate(lazy_cfg.dataloader[split].mapper).augmentations(inputs[0])
        DatasetMapper(yaml, is_train=is_train).augmentations(inputs[1])
        assert inputs[0].image.shape == inputs[1].image.shape == (85, 128, 3)  # long side 128
    # detectron2's loader default (True) groups image by image in the main process; the demo
    # turns it off so that workers load whole batches ahead (DATALOADER.ASPECT_RATIO_GROUPING)
    train_args = inspect.signature(build_detection_train_loader).bind_partial(
        **{k: v for k, v in lazy_cfg.dataloader.train.items() if k != "_target_"})
    train_args.apply_defaults()
    assert train_args.arguments["aspect_ratio_grouping"] == yaml.DATALOADER.ASPECT_RATIO_GROUPING


def test_digits_config_trains_as_the_yaml_demo(datasets_root, tmp_path):
    """From one seed, 3 iterations of the Python digits config and of the YAML demo (both at
    test size) end in the same weights, bit for bit: same model, init order, data order,
    losses and optimizer steps."""
    lazy_cfg = load_lazy_config(DIGITS, [
        *TINY_MODEL, *TINY_DATA, "train.max_iter=3", f"train.output_dir={tmp_path / 'lazy'}",
        f"lr_multiplier.warmup_length={1 / 3!r}"])  # SOLVER.WARMUP_ITERS 1 of MAX_ITER 3
    del lazy_cfg.dataloader["evaluator"]
    yaml = _yacs_cfg("demo/faster_rcnn_X50_digits.yaml", [
        "MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 16, "MODEL.FPN.OUT_CHANNELS", 16,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1,
        "SOLVER.STEPS", (), "SOLVER.MAX_ITER", 3, "INPUT.MIN_SIZE_TRAIN", (64,),
        "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
        "DATALOADER.NUM_WORKERS", 0, "DATASETS.TEST", (), "OUTPUT_DIR", str(tmp_path / "yaml")])
    seed_all_rng(0)
    do_train(LazySetup(lazy_cfg))
    seed_all_rng(0)
    trainer = Trainer(yaml)
    trainer.resume_or_load(resume=False)
    trainer.train()
    lazy, twin = (torch.load(tmp_path / run / "model_final.pth")["model"] for run in ("lazy", "yaml"))
    assert lazy.keys() == twin.keys() and all(torch.equal(lazy[k], twin[k]) for k in lazy)
    seed_all_rng(0)
    initial = instantiate(lazy_cfg.model).state_dict()  # the weights both started from
    assert not torch.equal(initial["roi_heads.box_predictor.cls_score.weight"],
                           lazy["roi_heads.box_predictor.cls_score.weight"])


def _shrunk(name, tmp_path):
    """A shipped X101 config at test size on the digits set: widths / 16, 64 px, 2 iterations."""
    cfg = load_lazy_config(str(LAZY / name), [
        f"{BOTTOM_UP}template=X50_2x2d", f"{BOTTOM_UP}stem_out_channels=8",
        f"{BOTTOM_UP}res2_out_channels=16", "model.backbone.out_channels=16",
        "model.proposal_generator.head.in_channels=16", "model.roi_heads.num_classes=10",
        "model.roi_heads.batch_size_per_image=32",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        "dataloader.train.dataset.names=digits_train", "dataloader.test.dataset.names=digits_val",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0", "train.init_checkpoint=", "train.max_iter=2",
        "train.amp.enabled=False", f"train.output_dir={tmp_path}", "train.fast_inference=fold"])
    heads = cfg.model.roi_heads
    heads.box_head.input_shape = ShapeSpec(channels=16, height=7, width=7)
    heads.box_head.conv_dims = [16] * len(heads.box_head.conv_dims)
    heads.box_head.fc_dims = [32] * len(heads.box_head.fc_dims)
    heads.box_predictor.input_shape = ShapeSpec(channels=32)
    if "mask_head" in heads:
        heads.mask_head.input_shape = ShapeSpec(channels=16, height=14, width=14)
        heads.mask_head.conv_dims = [16] * len(heads.mask_head.conv_dims)
        # the digits json holds each digit's ink as RLE, which detectron2 reads as bitmasks
        cfg.dataloader.train.mapper.instance_mask_format = "bitmask"
    sizes = dict(short_edge_length=64, max_size=64, target_height=64, target_width=64,
                 crop_size=[64, 64])
    for aug in cfg.dataloader.train.mapper.augmentations + cfg.dataloader.test.mapper.augmentations:
        aug.update({k: v for k, v in sizes.items() if k in aug})
    return cfg


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_trains_on_digits(name, datasets_root, tmp_path):
    """The recipe (norms, heads, LSJ crops, masks) runs: 2 iterations, then COCO evaluation."""
    cfg = _shrunk(name, tmp_path)
    tasks = ("bbox", "segm") if "mask_head" in cfg.model.roi_heads else ("bbox",)
    if "segm" in tasks:  # the mask configs need the digits masks
        record = DatasetCatalog.get("digits_train")[0]
        assert all("segmentation" in a for a in record["annotations"]), "no masks in the json"
    results = do_train(LazySetup(cfg))
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "metrics.json").is_file()
    written = json.loads((tmp_path / "inference/digits_val/coco_metrics.json").read_text())
    assert set(written) == {"dataset", *tasks}
    detections = json.loads((tmp_path / "inference/digits_val/coco_instances_results.json")
                            .read_text())
    gt = datasets_root / "digits/annotations/instances_val.json"
    for task in tasks:
        assert written[task] == pytest.approx(results[task], nan_ok=True)  # what do_train returns
        scored = pycocotools_stats(gt, detections, task)  # the written detections, scored here
        assert {k: written[task][k] for k in scored} == pytest.approx(scored, nan_ok=True)


def _run(datasets_root, *args):
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", DIGITS, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _coco_metrics(output_dir):
    return json.loads((output_dir / "inference/digits_val/coco_metrics.json").read_text())


def test_digits_config_trains_resumes_and_evaluates(datasets_root, tmp_path, monkeypatch,
                                                    capsys):
    """tools/train_net.py with a .py config and key=value overrides: checkpoints,
    metrics.json, COCO metrics; --resume continues at the next iteration; --eval-only."""
    out = tmp_path / "run"
    common = [*TINY_MODEL, *TINY_DATA, f"train.output_dir={out}", "train.checkpointer.period=1"]
    log = _run(datasets_root, *common, "train.max_iter=2")
    assert "No CUDA device here: train.device set to 'cpu'" in log
    assert (out / "model_0000000.pth").is_file() and (out / "config.yaml").is_file()
    assert (out / "last_checkpoint").read_text() == "model_final.pth"

    lines = (out / "metrics.json").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines if "total_loss" in line] == [1]
    for name in ("model_0000001.pth", "model_final.pth"):  # killed after iteration 0's checkpoint
        (out / name).unlink()
    (out / "last_checkpoint").write_text("model_0000000.pth")

    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    tool = load_tool("train_net")  # in this process from here on: no second start-up
    with captured("detectron2.engine.train_loop") as records:
        tool.run(["--config-file", DIGITS, "--resume", *common, "train.max_iter=3"])
    assert "Starting training from iteration 1" in records
    lines = (out / "metrics.json").read_text().splitlines()
    # the killed run's record of iteration 1 was cut: each iteration once
    assert [json.loads(line)["iteration"] for line in lines if "total_loss" in line] == [2]
    assert torch.load(out / "model_final.pth")["iteration"] == 2
    assert torch.load(out / "model_final.pth")["classes"] == [str(d) for d in range(10)]
    final = _coco_metrics(out)
    assert math.isfinite(final["bbox"]["AP"]) and "AP-9" in final["bbox"]
    # detectron2's LRScheduler puts back the checkpoint's base lr: another one is refused
    trained_lr = max(torch.load(out / "model_final.pth")["trainer"]["hooks"]["LRScheduler"]
                     ["base_lrs"])
    with pytest.raises(SystemExit) as exit_info:
        tool.run(["--config-file", DIGITS, "--resume", *common, "train.max_iter=4",
                  f"optimizer.lr={trained_lr / 10}"])
    assert exit_info.value.code == 2
    assert (f"error: optimizer.lr={trained_lr / 10!r} is not valid: expected {trained_lr!r}, the "
            "value") in capsys.readouterr().err
    # torch puts back each group's weight decay: the norms' (optimizer.params) went on as before;
    # a bias decay of its own regroups the parameters (torch's load: a bare ValueError)
    groups = torch.load(out / "model_final.pth")["trainer"]["optimizer"]["param_groups"]
    norm_decay = min(group["weight_decay"] for group in groups)  # common/optim.py's SGD: 0.0
    for override, expected in (("optimizer.params.weight_decay_norm=0.1", norm_decay),
                               ("+optimizer.params.weight_decay_bias=0.0", None)):
        with pytest.raises(SystemExit) as exit_info:
            tool.run(["--config-file", DIGITS, "--resume", *common, "train.max_iter=4", override])
        assert exit_info.value.code == 2
        key, value = override.lstrip("+").split("=")
        assert (f"error: {key}={float(value)!r} is not valid: expected {expected!r}, the value"
                in capsys.readouterr().err)
    assert torch.load(out / "model_final.pth")["iteration"] == 2

    evaluated = tmp_path / "eval"
    tool.run(["--config-file", DIGITS, "--eval-only", *TINY_MODEL, *TINY_DATA,
              f"train.output_dir={evaluated}", f"train.init_checkpoint={out / 'model_final.pth'}"])
    # the resumed run's final evaluation and the --eval-only of its model_final.pth: what
    # detectron2 alone (LazyConfig.load of the run's config.yaml) detects, pycocotools scores
    digits = datasets_root / "digits"
    expected = detectron2_detections(out / "config.yaml", out / "model_final.pth",
                                     digits / "annotations/instances_val.json",
                                     digits / "images/val", tmp_path / "detectron2")
    assert len({r["image_id"] for r in expected}) == 4  # boxes on every val image
    scored = pycocotools_stats(digits / "annotations/instances_val.json", expected)
    for folder in (out, evaluated):
        assert_same_detections(json.loads(
            (folder / "inference/digits_val/coco_instances_results.json").read_text()), expected)
        assert {k: _coco_metrics(folder)["bbox"][k] for k in scored} == pytest.approx(
            scored, abs=1e-3, nan_ok=True)


def _user_error(capsys, *overrides):
    """tools/train_net.py on bad input: exit status 2 and one `error:` line; that line."""
    with pytest.raises(SystemExit) as exit_:
        load_tool("train_net").run(["--config-file", DIGITS, *overrides])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in errors[0]
    return errors[0]


def test_a_refused_start_keeps_the_earlier_runs_files(datasets_root, capsys, tmp_path,
                                                      monkeypatch):
    """A new training into a finished run's folder: the earlier-run error, and the folder as
    it was (default_setup had replaced config.yaml before the check ran)."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    out = tmp_path / "run"
    out.mkdir()
    for name, data in (("model_final.pth", b"the earlier run's model"),
                       ("config.yaml", b"# the earlier run's config\n")):
        (out / name).write_bytes(data)
    error = _user_error(capsys, *TINY_MODEL, *TINY_DATA, f"train.output_dir={out}",
                        "train.max_iter=2")
    assert "expected a folder without an earlier run's checkpoints" in error
    assert (out / "config.yaml").read_bytes() == b"# the earlier run's config\n"
    assert (out / "model_final.pth").read_bytes() == b"the earlier run's model"


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not valid: expected a finite number > 0"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5 is not valid"),
    ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay=-0.0001 is not valid"),
    ("lr_multiplier.warmup_factor=-1.0", "lr_multiplier.warmup_factor=-1.0 is not valid"),
    ("dataloader.train.dataset.names=[]", "dataloader.train.dataset.names=[] is not valid"),
    ("train.seed=5000000000", "train.seed=5000000000 is not valid: expected a whole number"),
    ("train.checkpointer.max_to_keep=0", "train.checkpointer.max_to_keep=0 is not valid"),
    ("dataloader.test.batch_size=0", "dataloader.test.batch_size=0 is not valid"),
    ("optimizer.params.bias_lr_factor=2.0",  # get_default_optimizer_params: a bare ValueError
     "optimizer.params.bias_lr_factor=2.0 is not valid: expected 1.0 without optimizer.params."
     "base_lr"),
    ("dataloader.evaluator.output_dir=/dev/null/x",
     "dataloader.evaluator.output_dir='/dev/null/x' is not valid: expected a folder that can"),
])
def test_bad_training_values_stop_before_anything_is_built(override, message, capsys, tmp_path):
    """torch's optimizer: bare ValueErrors; detectron2: an assert on no dataset, numpy's
    ValueError on the seed, fvcore's assert on max_to_keep, torch's ValueError on the test
    batch (after the training), and a negative warmup factor trained by ascent."""
    error = _user_error(capsys, override, f"train.output_dir={tmp_path / 'x'}")
    assert message in error
    assert not (tmp_path / "x").exists()


def test_a_misspelt_override_is_an_error_naming_it(capsys, tmp_path):
    """detectron2's apply_overrides would add train.max_itr and train the config's iterations."""
    error = _user_error(capsys, "train.max_itr=3", f"train.output_dir={tmp_path / 'x'}",
                        "dataloader.train.dataset.names=unknown")  # were it missed: no training
    assert error.startswith("error: train.max_itr='3' is not valid: expected an existing key")
    assert "Did you mean train.max_iter?" in error
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override, message", [
    (f"{BOTTOM_UP}nrom=BN", f"Did you mean {BOTTOM_UP}norm?"),
    ("train.max_iter.x=1", "but train.max_iter is {max_iter} (int)"),
    ("train.weights.allow_partal=True", "Did you mean train.weights.allow_partial?"),
    ("train.max_iter=abc", "train.max_iter='abc' is not valid: expected a number"),
    ("train.max_iter=2.0", "train.max_iter=2.0 is not valid: expected a whole number"),
    ("dataloader.train.mapper.augmentations.3.max_size=1", "an index 0..0 of the list"),
    ("train.max_iter=[", "hydra's override grammar"),
    ("~train.max_iter", "key=value"),
    ("train.max_iter", "key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_lazy_config(DIGITS, [override])
    max_iter = load_lazy_config(DIGITS, []).train.max_iter  # the config's own value
    assert message.format(max_iter=max_iter) in str(error.value)


def test_overrides_reach_arguments_the_config_left_at_their_default():
    cfg = load_lazy_config(DIGITS, [f"{BOTTOM_UP}res5_dilation=2", "+train.note=x"])
    assert cfg.model.backbone.bottom_up.res5_dilation == 2 and cfg.train.note == "x"


def _digits(tmp_path, *overrides):
    return load_lazy_config(DIGITS, [f"train.output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("override, message", [
    (f"{BOTTOM_UP}norm=GN", f"{BOTTOM_UP}norm='GN' is not valid: expected a norm that fits width"),
    (f"{BOTTOM_UP}template=X34_32x4d", f"{BOTTOM_UP}template='X34_32x4d' is not valid"),
    (f"{BOTTOM_UP}out_features=[res6]", f"{BOTTOM_UP}out_features=['res6'] is not valid"),
    # a dilated res5 under an FPN: detectron2's FPN asserted "Strides 16 16 are not log2
    # contiguous" while the model was built
    (f"{BOTTOM_UP}res5_dilation=2", f"{BOTTOM_UP}res5_dilation=2 is not valid: expected 1 with "
                                    "an FPN on res5"),
    ("train.fast_inference=bogus", "train.fast_inference='bogus' is not valid"),
    ("+train.weights.allow_partal=True", "train.weights.allow_partal=True is not valid"),
    ("dataloader.on_bad_box=drop", "dataloader.on_bad_box='drop' is not valid"),
    ("dataloader.evaluator.backend=cocoapi", "dataloader.evaluator.backend='cocoapi'"),
    ("train.roi_align=fast", "train.roi_align='fast' is not valid: expected one of "
                             "['torchvision', 'sparse']"),
    # detectron2 would stop at the first checkpoint (modulo by zero) or in the loader (assert)
    ("train.checkpointer.period=0", "train.checkpointer.period=0 is not valid"),
    ("dataloader.train.total_batch_size=0", "dataloader.train.total_batch_size=0 is not valid"),
    ("train.eval_period=-1", "train.eval_period=-1 is not valid"),
    # the evaluator's dataset_name follows it: detectron2's KeyError at the first
    # evaluation, after the training (its output_dir was ".../inference/['digits_val']")
    ("dataloader.test.dataset.names=[digits_val]",
     "dataloader.evaluator.dataset_name=['digits_val'] is not valid: expected one dataset name"),
])
def test_bad_values_are_named_before_anything_is_built(override, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        LazySetup(_digits(tmp_path, *TINY_MODEL, override))
    assert message in str(error.value)


def test_train_roi_align_reaches_the_model(tmp_path):
    """train.roi_align is MODEL.RESNEXT.ROI_ALIGN: "sparse" builds SparseROIPooler,
    "torchvision" detectron2's ROIPooler; build_model checks the value again, naming the
    lazy key."""
    setup = LazySetup(_digits(tmp_path, *TINY_MODEL, "train.roi_align=sparse"))
    assert type(build_lazy_model(setup).roi_heads.box_pooler) is SparseROIPooler
    default = build_lazy_model(LazySetup(_digits(tmp_path, *TINY_MODEL, "train.roi_align=torchvision")))
    assert type(default.roi_heads.box_pooler) is ROIPooler
    setup.view.MODEL.RESNEXT.ROI_ALIGN = "fast"
    with pytest.raises(ConfigError, match=r"train.roi_align='fast' is not valid"):
        build_lazy_model(setup)


def test_a_missing_key_is_named(tmp_path):
    cfg = _digits(tmp_path)
    del cfg.train["device"]
    with pytest.raises(ConfigError, match=r"train.device=None is not valid: expected a value"):
        LazySetup(cfg)
    cfg = _digits(tmp_path)
    del cfg["optimizer"]
    with pytest.raises(ConfigError, match=r"optimizer=None is not valid: expected a value"):
        do_train(LazySetup(cfg))


def test_amp_trains_as_the_yaml_path_does(tmp_path):
    """train.amp.enabled is SOLVER.AMP.ENABLED: bfloat16 autocast on the CPU, an error
    naming both keys on a device without mixed precision."""
    setup = LazySetup(_digits(tmp_path, "train.amp.enabled=True", "train.device=cpu"))
    model = torch.nn.Linear(2, 2)
    step = build_step_trainer(setup.view, model, [], torch.optim.SGD(model.parameters(), 0.1))
    assert isinstance(step, CPUAutocastTrainer)
    cfg = _digits(tmp_path, "train.amp.enabled=True", "train.device=mps")
    with pytest.raises(ConfigError, match=r"train.amp.enabled=True is not valid: expected False "
                                          r"with train.device='mps'"):
        LazySetup(cfg)


def test_resnext_arguments_are_the_yacs_keys():
    """L(ResNeXt) and build_resnext_backbone are one builder: the same modules for each key."""
    kwargs = dict(template="X50_2x2d", out_features=["res3", "res5"], freeze_at=2, norm="BN",
                  stride_in_1x1=True, stem_out_channels=8, res2_out_channels=16, res5_dilation=2,
                  block_form="b", zero_init_residual=True)
    keys = ["MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.OUT_FEATURES", ["res3", "res5"],
            "MODEL.BACKBONE.FREEZE_AT", 2, "MODEL.RESNETS.NORM", "BN",
            "MODEL.RESNETS.STRIDE_IN_1X1", True, "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 16, "MODEL.RESNETS.RES5_DILATION", 2,
            "MODEL.RESNEXT.BLOCK_FORM", "b", "MODEL.RESNEXT.ZERO_INIT_RESIDUAL", True]
    torch.manual_seed(0)
    lazy = ResNeXt(**kwargs).eval()
    torch.manual_seed(0)
    yacs = build_resnext_backbone(make_cfg(*keys), ShapeSpec(channels=3)).eval()
    assert _shapes(lazy) == _shapes(yacs) and _types(lazy, skip="-") == _types(yacs, skip="-")
    assert _frozen(lazy) == _frozen(yacs) != []
    x = torch.rand(1, 3, 64, 64)
    lazy_out, yacs_out = lazy(x), yacs(x)
    assert lazy_out.keys() == yacs_out.keys() == {"res3", "res5"}
    assert all(torch.equal(lazy_out[k], yacs_out[k]) for k in lazy_out)


def test_init_checkpoint_of_torchvision_is_converted_and_checked(tmp_path):
    """train.init_checkpoint takes a torchvision ResNeXt state dict as torchvision saves it;
    the weights' metadata is compared with the config, in warnings naming lazy keys."""
    tv = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3],
                                   groups=2, width_per_group=2)  # X50_2x2d at full widths
    torch.nn.init.normal_(tv.layer1[0].bn1.running_mean)
    path = tmp_path / "resnext50_2x2d.pth"
    torch.save(tv.state_dict(), path)
    setup = LazySetup(_digits(
        tmp_path, f"{BOTTOM_UP}template=X50_2x2d", f"{BOTTOM_UP}stem_out_channels=64",
        f"{BOTTOM_UP}res2_out_channels=256", f"{BOTTOM_UP}stride_in_1x1=True",
        f"train.init_checkpoint={path}"))
    model = build_lazy_model(setup)
    with captured("resnext_det.engine.lazy") as records:
        build_checkpointer(setup, model).resume_or_load(str(path), resume=False)
    bottom_up = model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1.weight, tv.conv1.weight)
    assert torch.equal(bottom_up.res2[0].conv1.norm.running_mean, tv.layer1[0].bn1.running_mean)
    assert torch.equal(bottom_up.res5[2].conv3.weight, tv.layer4[2].conv3.weight)
    assert any(r.startswith(f"{BOTTOM_UP}stride_in_1x1=True but the torchvision weights")
               for r in records), records


def test_bad_training_boxes_are_named_with_the_lazy_key(datasets_root, tmp_path):
    register_digits(datasets_root / "digits")  # not left to an earlier test of the worker
    name = "digits_train_bad_box_lazy"
    dicts = copy.deepcopy(DatasetCatalog.get("digits_train"))
    dicts[0]["annotations"][0]["bbox"] = [30, 21, -10, 12]  # XYWH: no positive width
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).thing_classes = list(DIGIT_CLASSES)
    cfg = _digits(tmp_path, f"dataloader.train.dataset.names={name}", "dataloader.on_bad_box=error")
    with pytest.raises(DatasetError, match=r"dataloader.on_bad_box=skip"):
        build_train_loader(LazySetup(cfg))
    cfg.model.roi_heads.num_classes = 3
    with pytest.raises(DatasetError, match=r"model.roi_heads.num_classes=3 does not match "
                                           r"dataloader.train.dataset.names"):
        build_train_loader(LazySetup(cfg))


def test_dataset_argument_registers_a_json_for_a_python_config(datasets_root, tmp_path):
    """--dataset NAME=JSON:IMAGES (tools/train_net.py registers it first) works with a .py
    config too: the class count is not copied into it but checked, naming the lazy key."""
    digits = datasets_root / "digits"
    register_digits(digits)  # digits_val, compared below: not left to an earlier test
    json_file = next((digits / "annotations").glob("*val*.json"))
    image_dir = next(p for p in (digits / "images").iterdir() if "val" in p.name)
    args = SimpleNamespace(dataset=[f"mine_lazy={json_file}:{image_dir}"], config_file=DIGITS,
                           opts=["dataloader.train.dataset.names=mine_lazy"])
    assert register_dataset_args(args).opts == args.opts  # no YAML NUM_CLASSES override added
    assert len(DatasetCatalog.get("mine_lazy")) == len(DatasetCatalog.get("digits_val"))
    cfg = _digits(tmp_path, "dataloader.train.dataset.names=mine_lazy",
                  "model.roi_heads.num_classes=3")
    with pytest.raises(DatasetError, match=r"model.roi_heads.num_classes=3 does not match .* 10 "):
        build_train_loader(LazySetup(cfg))


def test_eval_only_without_a_checkpoint_is_a_clear_error(capsys, tmp_path, datasets_root,
                                                         monkeypatch):
    """detectron2 evaluated the random initialization; the config's init_checkpoint is ''."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    error = _user_error(capsys, "--eval-only", *TINY_MODEL, *TINY_DATA,
                        f"train.output_dir={tmp_path}", "train.init_checkpoint=''")
    assert error.startswith("error: train.init_checkpoint='' is not valid: expected a checkpoint")


def test_eval_only_of_another_class_count_than_the_test_set_is_named(capsys, tmp_path,
                                                                     datasets_root, monkeypatch):
    """As on the YAML path: a model of 11 classes on digits_val's 10 stopped after the whole
    inference (a KeyError where it predicted class 10); now one line, in the lazy key."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    error = _user_error(capsys, "--eval-only", *TINY_MODEL, *TINY_DATA,
                        f"train.output_dir={tmp_path}", "model.roi_heads.num_classes=11")
    assert error.startswith("error: model.roi_heads.num_classes=11 does not match "
                            "dataloader.test.dataset.names: dataset 'digits_val' has 10 classes")
    # the override it asks for in a .py config's form (it read "num_classes 10")
    assert "Set model.roi_heads.num_classes=10 if " in error


def test_a_sampler_built_from_the_dataset_gets_the_checked_images(datasets_root, tmp_path):
    """detectron2's LVIS configs compute the sampler's repeat factors from
    "${dataloader.train.dataset}": a second load, unchecked. With an image whose only box is
    skipped (and so left out), its factors were of other images than the loader's, one
    more than it has. The factors must be detectron2's own function of the checked images."""
    from detectron2.config import LazyCall as L
    from detectron2.data.samplers import RepeatFactorTrainingSampler

    name = "digits_train_empty_after_skip_lazy"
    dicts = copy.deepcopy(DatasetCatalog.get("digits_train"))
    for ann in dicts[0]["annotations"]:
        ann["bbox"] = [30, 21, -10, 12]  # no positive width: all of image 0's boxes skipped
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).thing_classes = list(DIGIT_CLASSES)
    cfg = _digits(tmp_path, f"dataloader.train.dataset.names={name}")
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency
    cfg.dataloader.train.sampler = L(RepeatFactorTrainingSampler)(
        repeat_factors=L(factors)(dataset_dicts="${dataloader.train.dataset}", repeat_thresh=0.5))
    loader = build_train_loader(LazySetup(cfg))
    sampler = loader.dataset.sampler
    checked = dicts[1:]  # image 0 has no box left (FILTER_EMPTY_ANNOTATIONS)
    assert len(sampler._int_part) == len(checked) == len(dicts) - 1
    expected = factors(checked, 0.5)
    assert torch.equal(sampler._int_part + sampler._frac_part, expected)
