"""Every shipped detection config is its detectron2 model-zoo recipe but for the backbone.

Each config under configs/ (configs/demo/ too) and configs/lazy/ is merged (get_cfg +
add_resnext_config, or LazyConfig.load) next to the installed detectron2's own config of
the same setting (model_zoo.get_config_file / get_config), and every key outside the
backbone's is compared: solver, input, anchors, RPN, ROI / mask heads, test, data loader.
What may differ: the backbone (MODEL.RESNETS, MODEL.RESNEXT, MODEL.BACKBONE, the lazy
bottom_up), the weights and what must follow them (pixel statistics, channel order), and
the differences listed below, each with its reason and each commented where our YAML sets
it. The models both build (meta device) then agree outside the backbone in module types,
attributes and parameter shapes, and their anchors are the same numbers.
"""
import re
from pathlib import Path

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import LazyConfig, get_cfg
from detectron2.layers import get_norm
from detectron2.modeling import build_anchor_generator, build_model
from omegaconf import OmegaConf

import resnext_det
from resnext_det.checkpoint import catalog
from tests.publisher_conventions import published_convention

CONFIGS = Path(__file__).parents[2] / "configs"

# The backbone's keys and what must follow the weights (tests/config/test_configs.py
# checks those against the weights' publisher).
BACKBONE_PREFIXES = ("MODEL.RESNETS.", "MODEL.RESNEXT.", "MODEL.BACKBONE.")
WEIGHTS_KEYS = {"MODEL.WEIGHTS", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT"}

C4_1X = "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"
FPN_1X = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
FPN_3X = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
MASK_1X = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
CASCADE_1X = "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml"

# Our YAML config -> detectron2's zoo config of the same setting (the paper's C4 models:
# detectron2's C4 1x recipe; dconv configs: the plain recipe, DEFORM_* being backbone keys).
ZOO_YAML = {
    "faster_rcnn_R50": C4_1X, "faster_rcnn_X50_32x4d": C4_1X,
    "faster_rcnn_R101": C4_1X, "faster_rcnn_X101_32x4d": C4_1X,
    "faster_rcnn_X50_32x4d_FPN_1x": FPN_1X, "faster_rcnn_X50_32x4d_FPN_3x": FPN_3X,
    "faster_rcnn_X101_32x8d_FPN_1x": FPN_1X,
    "faster_rcnn_X101_32x8d_FPN_3x": "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml",
    "faster_rcnn_X101_64x4d_FPN_1x": FPN_1X, "faster_rcnn_X101_64x4d_FPN_3x": FPN_3X,
    "faster_rcnn_X101_32x4d_dconv_FPN_1x": FPN_1X,
    "retinanet_X101_32x4d_FPN_1x": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "mask_rcnn_X50_32x4d_C4_1x": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml",
    "mask_rcnn_X50_32x4d_FPN_1x": MASK_1X,
    "mask_rcnn_X50_32x4d_FPN_3x": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "mask_rcnn_X101_32x8d_FPN_3x": "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml",
    "cascade_rcnn_X101_32x4d_FPN_1x": CASCADE_1X,
    "cascade_mask_rcnn_X101_32x4d_FPN_1x": CASCADE_1X,
    "cascade_mask_rcnn_X101_32x4d_dconv_FPN_1x": CASCADE_1X,
    "cascade_mask_rcnn_X101_32x8d_FPN_3x": "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
    "demo/faster_rcnn_X50_digits": FPN_1X,
    "demo/mask_rcnn_X50_digits": MASK_1X,
}

_PAPER_C4 = {
    "DATASETS.TRAIN": "the paper's COCO 2014 train + val35k (Table 8)",
    "DATASETS.TEST": "the paper's COCO 2014 minival (Table 8)",
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeads with res5 built from our block",
}
_DEMO = {
    "DATASETS.TRAIN": "the digits demo set", "DATASETS.TEST": "the digits demo set",
    "MODEL.ROI_HEADS.NUM_CLASSES": "10 digits",
    "INPUT.MIN_SIZE_TRAIN": "128 px images, kept at 128", "INPUT.MAX_SIZE_TRAIN": "128 px",
    "INPUT.MIN_SIZE_TEST": "128 px", "INPUT.MAX_SIZE_TEST": "128 px",
    "INPUT.RANDOM_FLIP": "a mirrored 2 is not a 2",
    "MODEL.ANCHOR_GENERATOR.SIZES": "digits are 12-48 px",
    "MODEL.FPN.OUT_CHANNELS": "widths / 4", "MODEL.ROI_BOX_HEAD.FC_DIM": "widths / 4",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": "a few digits per image",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "a few digits per image",
    "MODEL.RPN.PRE_NMS_TOPK_TEST": "a few digits per image",
    "MODEL.RPN.POST_NMS_TOPK_TEST": "a few digits per image",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "a few digits per image",
    "DATALOADER.NUM_WORKERS": "2 CPU cores",
    "DATALOADER.ASPECT_RATIO_GROUPING": "all images 128x128: whole batches loaded ahead",
    "SOLVER.IMS_PER_BATCH": "2 CPU cores", "SOLVER.MAX_ITER": "the CPU demo's schedule",
    "SOLVER.STEPS": "the CPU demo's schedule", "SOLVER.WARMUP_ITERS": "the CPU demo's schedule",
    "SOLVER.CHECKPOINT_PERIOD": "the CPU demo's schedule",
    "TEST.EVAL_PERIOD": "AP curve of the demo",
    "TEST.IMS_PER_BATCH": "all 128x128: same AP, faster",
    "OUTPUT_DIR": "the demo's folder", "SEED": "a rerun gives the README's AP",
}
# Our YAML config -> {key: why it differs from the zoo's}; every other key must be equal.
INTENDED_YAML = {
    **{name: _PAPER_C4 for name in ("faster_rcnn_R50", "faster_rcnn_X50_32x4d",
                                    "faster_rcnn_R101", "faster_rcnn_X101_32x4d")},
    "mask_rcnn_X50_32x4d_C4_1x": {"MODEL.ROI_HEADS.NAME": _PAPER_C4["MODEL.ROI_HEADS.NAME"]},
    "cascade_rcnn_X101_32x4d_FPN_1x": {"MODEL.MASK_ON": "Cascade R-CNN, boxes only"},
    "demo/faster_rcnn_X50_digits": _DEMO,
    "demo/mask_rcnn_X50_digits": {**_DEMO, "INPUT.MASK_FORMAT": "the digits' masks are RLE",
                                  "MODEL.ROI_MASK_HEAD.CONV_DIM": "widths / 4"},
}


def _flat(node, prefix=""):
    """{"MODEL.RPN.NMS_THRESH": 0.7, ...} of a CfgNode."""
    out = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _cfg(path):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg


def _recipe_differences(ours, theirs):
    """{key: (ours, zoo)} for every key outside the backbone and the weights' conventions."""
    a, b = _flat(ours), _flat(theirs)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if not k.startswith(BACKBONE_PREFIXES) and k not in WEIGHTS_KEYS
            and a.get(k) != b.get(k)}


def _chain(path):
    """The config and its _BASE_ files, most derived first."""
    files = [path]
    while (match := re.search(r'^_BASE_: "([^"]+)"', files[-1].read_text(), re.M)):
        files.append(files[-1].parent / match.group(1))
    return files


def _yaml_keys(text):
    """{dotted key: commented} of a YAML file's key lines: commented when the line, the
    comment lines right above it or a line of an enclosing section carry a comment."""
    keys, stack, above = {}, [], False
    for line in text.splitlines():
        if line.strip().startswith("#"):
            above = True
            continue
        match = re.match(r"^( *)(\w+):(.*)$", line)
        if not match:
            above = above and not line.strip()
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        stack = [(i, k, c) for i, k, c in stack if i < indent]
        commented = above or "#" in rest or any(c for _, _, c in stack)
        stack.append((indent, key, commented))
        keys[".".join(k for _, k, _ in stack)] = commented
        above = False
    return keys


def _set_with_comment(path, key):
    """Whether the file of the chain that sets `key` last says why, in a comment."""
    for file in _chain(path):
        keys = _yaml_keys(file.read_text())
        if key in keys:
            return keys[key]
    return False


def _shipped_yaml():
    found = [p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("Base-")]
    found += list((CONFIGS / "demo").glob("*.yaml"))
    return sorted(str(p.relative_to(CONFIGS).with_suffix("")) for p in found)


def test_every_shipped_yaml_config_has_its_zoo_counterpart():
    assert _shipped_yaml() == sorted(ZOO_YAML)


@pytest.mark.parametrize("name", sorted(ZOO_YAML))
def test_yaml_config_is_its_zoo_recipe_but_for_the_backbone(name):
    path = CONFIGS / f"{name}.yaml"
    differences = _recipe_differences(_cfg(path), _cfg(model_zoo.get_config_file(ZOO_YAML[name])))
    intended = INTENDED_YAML.get(name, {})
    unintended = {k: v for k, v in differences.items() if k not in intended}
    assert not unintended, f"{name}: differs from detectron2's {ZOO_YAML[name]}: {unintended}"
    assert sorted(differences) == sorted(intended), f"{name}: listed but equal to the zoo's"
    uncommented = [k for k in intended if not _set_with_comment(path, k)]
    assert not uncommented, f"{name}: differences set without a comment saying why: {uncommented}"


SIMPLE = (int, float, bool, str, type(None))


def _simple(value):
    return isinstance(value, SIMPLE) or (isinstance(value, (tuple, list))
                                         and all(_simple(v) for v in value))


def _attributes(module):
    """A module's plain settings (numbers, strings, their tuples), input_format aside."""
    return {k: v for k, v in vars(module).items()
            if _simple(v) and not k.startswith("_") and k not in ("training", "input_format")}


def _heads(model):
    """{module name: (class, plain attributes)} and {parameter: shape} outside the
    backbone's bottom-up (and the C4 head's res5): the FPN, RPN, ROI / mask heads."""
    # C4: the whole backbone is the ResNeXt; FPN: its bottom_up is
    bottom_up = "backbone.bottom_up" if hasattr(model.backbone, "bottom_up") else "backbone"
    skip = (bottom_up, "roi_heads.res5")
    modules = {n: (type(m), _attributes(m)) for n, m in model.named_modules()
               if not n.startswith(skip)}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(skip)}
    return modules, shapes


def _meta_model(cfg):
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def _cell_anchors(cfg, model):
    """The anchors (CPU numbers) the config's anchor generator makes for the model's levels."""
    head = getattr(model, "proposal_generator", model)
    features = getattr(head, "in_features", None) or model.head_in_features
    shapes = [model.backbone.output_shape()[f] for f in features]
    return [a.tolist() for a in build_anchor_generator(cfg, shapes).cell_anchors]


@pytest.mark.parametrize("name", sorted(n for n in ZOO_YAML if not n.startswith("demo/")))
def test_yaml_model_is_the_zoo_model_but_for_the_backbone(name):
    """Built from both configs: the same heads (types, attributes, shapes) and anchors.
    The paper's C4 head is detectron2's Res5ROIHeads with our res5 (a subclass)."""
    ours = _cfg(CONFIGS / f"{name}.yaml")
    theirs = _cfg(model_zoo.get_config_file(ZOO_YAML[name]))
    for key in INTENDED_YAML.get(name, {}):  # e.g. boxes only; the head's class stays theirs
        if key != "MODEL.ROI_HEADS.NAME":
            theirs.merge_from_list([key, _flat(ours)[key]])
    model, peer = _meta_model(ours.clone()), _meta_model(theirs.clone())
    (modules, shapes), (peer_modules, peer_shapes) = _heads(model), _heads(peer)
    assert shapes == peer_shapes
    assert modules.keys() == peer_modules.keys()
    for module, (cls, attrs) in modules.items():
        peer_cls, peer_attrs = peer_modules[module]
        assert issubclass(cls, peer_cls), module
        assert attrs == peer_attrs, module
    assert _cell_anchors(ours, model) == _cell_anchors(theirs, peer)


# Python configs: ours -> detectron2's own Python config of the same setting.
LAZY_ZOO = {
    "mask_rcnn_X101_32x8d_FPN_1x": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py",
    "faster_rcnn_X101_32x8d_FPN_1x": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py",
    "mask_rcnn_X101_32x8d_FPN_100ep_LSJ": "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py",
    "faster_rcnn_X50_digits": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py",
}
LAZY_BACKBONE = ("model.backbone.bottom_up.",)
LAZY_WEIGHTS = {"train.init_checkpoint", "model.pixel_mean", "model.pixel_std",
                "model.input_format", "dataloader.train.mapper.image_format",
                "dataloader.test.mapper.image_format"}
# resnext_det's own keys (configs/lazy/common/{train,coco}.py): not in detectron2's configs
LAZY_OURS = ("train.fast_inference", "train.fast_training", "train.inference_dtype",
             "train.roi_align", "train.weights.", "train.seed", "dataloader.evaluator.",
             "dataloader.on_bad_box", "dataloader.on_bad_image")
_NO_MASK = {"model.roi_heads.mask_": "Faster R-CNN: no mask branch",
            "dataloader.train.mapper.use_instance_mask": "Faster R-CNN: no masks loaded"}
# key or key prefix (ending in "." or "_") -> why it differs
INTENDED_LAZY = {
    "faster_rcnn_X101_32x8d_FPN_1x": _NO_MASK,
    "mask_rcnn_X101_32x8d_FPN_100ep_LSJ": {
        "model.roi_heads.box_head.conv_norm": "get_norm's name of the zoo's lambda (saveable)",
        "model.roi_heads.mask_head.conv_norm": "get_norm's name of the zoo's lambda (saveable)",
    },
    "faster_rcnn_X50_digits": {
        **_NO_MASK,
        "dataloader.train.": "the digits set at 128 px, no flip, 8 per batch, whole batches",
        "dataloader.test.": "the digits set at 128 px, 8 per batch, 1 worker",
        "model.backbone.out_channels": "widths / 4",
        "model.proposal_generator.": "digits anchors, a few digits per image, widths / 4",
        "model.roi_heads.": "10 digits, a few per image, widths / 4",
        "lr_multiplier.": "the CPU demo's schedule", "train.": "the CPU demo's schedule",
    },
}


def _flat_lazy(node, prefix=""):
    """{"model.roi_heads.num_classes": 80, ...} of a resolved LazyConfig (lists of plain
    values as one value, lists of nodes by index)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat_lazy(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(_flat_lazy(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: node}


def _lazy(cfg):
    return _flat_lazy(OmegaConf.to_container(cfg, resolve=True))


def _matches(key, names):
    return any(key == n or (n.endswith((".", "_")) and key.startswith(n)) for n in names)


def test_every_shipped_python_config_has_its_zoo_counterpart():
    assert sorted(p.stem for p in (CONFIGS / "lazy").glob("*.py")) == sorted(LAZY_ZOO)


@pytest.mark.parametrize("name", sorted(LAZY_ZOO))
def test_python_config_is_its_zoo_recipe_but_for_the_backbone(name):
    ours = _lazy(LazyConfig.load(str(CONFIGS / "lazy" / f"{name}.py")))
    theirs = _lazy(model_zoo.get_config(LAZY_ZOO[name]))
    differences = {k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs))
                   if ours.get(k) != theirs.get(k) and not k.startswith(LAZY_BACKBONE)
                   and k not in LAZY_WEIGHTS and not _matches(k, LAZY_OURS)}
    intended = INTENDED_LAZY.get(name, {})
    unintended = {k: v for k, v in differences.items() if not _matches(k, intended)}
    assert not unintended, f"{name}: differs from detectron2's {LAZY_ZOO[name]}: {unintended}"
    unused = [n for n in intended if not any(_matches(k, [n]) for k in differences)]
    assert not unused, f"{name}: listed but equal to the zoo's: {unused}"


def test_the_lsj_config_s_norm_name_is_detectron2_s_norm():
    """"naiveSyncBN_N" (ours) builds what the zoo's `lambda c: NaiveSyncBatchNorm(c,
    stats_mode="N")` builds."""
    ours = LazyConfig.load(str(CONFIGS / "lazy" / "mask_rcnn_X101_32x8d_FPN_100ep_LSJ.py"))
    theirs = model_zoo.get_config(LAZY_ZOO["mask_rcnn_X101_32x8d_FPN_100ep_LSJ"])
    for head in ("box_head", "mask_head"):
        a = get_norm(ours.model.roi_heads[head].conv_norm, 8)
        b = get_norm(theirs.model.roi_heads[head].conv_norm, 8)
        assert type(a) is type(b) and a._stats_mode == b._stats_mode == "N"


def _catalog_comment(text):
    match = re.search(r"# catalog: (\S+) = (\S+)", text)
    return catalog.get(match.group(1)) if match else None


@pytest.mark.parametrize("name", sorted(LAZY_ZOO))
def test_python_config_feeds_its_weights_what_they_were_trained_on(name):
    """train.init_checkpoint's catalog entry (the '# catalog:' comment) was trained with the
    input convention that the model and both data mappers use; from scratch, no file."""
    path = CONFIGS / "lazy" / f"{name}.py"
    cfg = LazyConfig.load(str(path))
    flat = _lazy(cfg)
    model = cfg.model
    formats = {flat["model.input_format"], flat["dataloader.train.mapper.image_format"],
               flat["dataloader.test.mapper.image_format"]}
    assert formats == {model.input_format}
    entry = _catalog_comment(path.read_text())
    if not cfg.train.init_checkpoint:
        assert entry is None and model.backbone.bottom_up.freeze_at == 0  # all of it trains
        return
    # the published file under its name without the hash: resnext101_32x8d-8ba56ff5.pth
    assert entry is not None and cfg.train.init_checkpoint.endswith(
        entry.file_name.split("-")[0] + ".pth")
    published = published_convention(entry)
    assert model.input_format == published["input_format"]
    assert list(model.pixel_mean) == pytest.approx(published["pixel_mean"])
    assert list(model.pixel_std) == pytest.approx(published["pixel_std"])
    assert model.backbone.bottom_up.stride_in_1x1 == published["stride_in_1x1"]
    assert model.backbone.bottom_up.template == entry.template
