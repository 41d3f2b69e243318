"""Every shipped config merges, builds its model and states what the paper reports."""
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import resnext_det
from resnext_det.checkpoint import catalog
from resnext_det.config.paper import COCO_C4_AP
from resnext_det.modeling import parse_template
from resnext_det.modeling.config_args import resolve_template
from tests.publisher_conventions import published_convention

CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("Base-"))


def _load(path):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _catalog_entry(path):
    """The weights entry the config's MODEL.WEIGHTS comment names ("# catalog: NAME = FILE")."""
    match = re.search(r"# catalog: (\S+) = (\S+)", path.read_text())
    assert match, f"{path.name}: no '# catalog: NAME = FILE' comment above MODEL.WEIGHTS"
    entry = catalog.get(match.group(1))
    assert entry.file_name == match.group(2)
    return entry


def _same_conventions(got, expected):
    """(format, mean, std, stride_in_1x1) tuples equal, statistics to float rounding."""
    (fmt, mean, std, stride), (fmt2, mean2, std2, stride2) = got, expected
    return (fmt, stride) == (fmt2, stride2) and list(mean) == pytest.approx(mean2) \
        and list(std) == pytest.approx(std2)


def _downsampling_blocks(model):
    """The first block of res3, res4 and res5 (C4: res5 is the ROI head's)."""
    backbone = getattr(model.backbone, "bottom_up", model.backbone)
    res5 = getattr(model.roi_heads, "res5", None) if hasattr(model, "roi_heads") else None
    stages = [backbone.res3, backbone.res4, res5 if res5 is not None else backbone.res5]
    return [stage[0] for stage in stages]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_with_paper_conventions(path):
    """What the weights a config names were trained with, from their publisher: the config
    and the model built from it agree (channel order, pixel statistics, stride placement,
    template). The publisher's installed code says it (tests/publisher_conventions.py:
    torchvision's weights transforms, pretrainedmodels' settings of its Torch7 ports,
    detectron2's model zoo config of its Caffe2 file), and the catalog agrees."""
    cfg = _load(path)
    entry = _catalog_entry(path)
    published = published_convention(entry)
    expected = (published["input_format"], published["pixel_mean"], published["pixel_std"],
                published["stride_in_1x1"])
    assert _same_conventions((entry.input_format, list(entry.pixel_mean),
                              list(entry.pixel_std), entry.stride_in_1x1), expected)
    assert _same_conventions((cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD,
                              cfg.MODEL.RESNETS.STRIDE_IN_1X1), expected)
    assert resolve_template(cfg).name == entry.template and entry.template in path.stem
    assert cfg.MODEL.WEIGHTS.startswith("pretrained/")

    model = build_model(cfg)
    assert model.pixel_mean.flatten().tolist() == pytest.approx(expected[1])
    assert model.pixel_std.flatten().tolist() == pytest.approx(expected[2])
    stride = (2, 2)
    for block in _downsampling_blocks(model):
        in_1x1, in_3x3 = block.conv1.stride == stride, block.conv2.stride == stride
        assert (in_1x1, in_3x3) == (expected[3], not expected[3])
    template = parse_template(entry.template)  # the paper's C and d, e.g. 32x4d: 32 groups of 4
    res2 = getattr(model.backbone, "bottom_up", model.backbone).res2[0]
    assert res2.conv2.groups == template.cardinality
    assert res2.conv2.out_channels == template.cardinality * template.bottleneck_width


# the paper's Table 8 (COCO minival, Faster R-CNN C4): AP, AP@0.5, copied from the paper
TABLE8 = {"R50": (26.5, 47.6), "X50_32x4d": (27.5, 49.7), "R101": (29.8, 51.1),
          "X101_32x4d": (30.0, 51.9)}


def test_paper_configs_state_the_paper_numbers():
    assert COCO_C4_AP == TABLE8  # the package's copy (README, configs) is the paper's
    c4 = [p for p in CONFIGS if "FPN" not in p.stem and p.stem.startswith("faster_rcnn")]
    assert len(c4) == len(COCO_C4_AP)
    for path in c4:
        cfg = _load(path)
        assert cfg.MODEL.ROI_HEADS.NAME == "ResNeXtRes5ROIHeads"
        assert cfg.DATASETS.TEST == ("coco_2014_minival",)
        ap, ap50 = COCO_C4_AP[resolve_template(cfg).name]
        assert re.search(rf"\b{ap} AP / {ap50} AP50\b", path.read_text()), path.name


FAMILY_CONFIGS = [p for p in CONFIGS if p.stem.startswith(("mask_rcnn", "cascade_"))]
PUBLISHED = re.compile(r"^# published: (.+)$", re.M)
# "<zoo file>, "<table>", <row>: 44.3 box AP / 39.5 mask AP on coco_2017_val"
REFERENCE = re.compile(r'^(detectron2 MODEL_ZOO\.md|mmdetection configs/\w+/README\.md), "[^"]+", '
                       r"[^:]+: (\d+\.\d) box AP( / (\d+\.\d) mask AP)? on coco_2017_val$")


def _meta_model(cfg):
    """The model a config builds, on the meta device (structure only, no memory)."""
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def test_the_issue_s_family_configs_are_shipped():
    names = {p.stem for p in FAMILY_CONFIGS}
    assert {"mask_rcnn_X101_32x8d_FPN_3x", "mask_rcnn_X50_32x4d_FPN_1x",
            "mask_rcnn_X50_32x4d_FPN_3x"} <= names
    assert any("_C4" in n for n in names if n.startswith("mask_rcnn"))
    assert any(n.startswith("cascade_rcnn_X101") for n in names)
    assert any(n.startswith("cascade_mask_rcnn_X101") for n in names)


@pytest.mark.parametrize("path", FAMILY_CONFIGS, ids=[p.stem for p in FAMILY_CONFIGS])
def test_family_config_builds_its_family_and_names_a_reference(path):
    """A Mask / Cascade config builds the heads its name says, and states the published AP
    of its setting (box, and mask exactly when MASK_ON) or that none is stated."""
    cfg = _load(path)
    model = _meta_model(cfg)
    is_mask, is_cascade = "mask_rcnn" in path.stem, path.stem.startswith("cascade")
    assert cfg.MODEL.MASK_ON == is_mask == hasattr(model.roi_heads, "mask_head")
    assert (type(model.roi_heads).__name__ == "CascadeROIHeads") == is_cascade
    if is_cascade:
        assert len(model.roi_heads.box_predictor) == len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS) == 3
    if "_C4" in path.stem:  # the mask head reads the ResNeXt res5 that the box head reads
        res5_out = [m for m in model.roi_heads.res5.modules() if isinstance(m, torch.nn.Conv2d)]
        assert model.roi_heads.mask_head.deconv.in_channels == res5_out[-1].out_channels
    lines = PUBLISHED.findall(path.read_text())
    assert len(lines) == 1, f"{path.name}: one '# published: ...' line"
    if lines[0].startswith("not stated here ("):
        return
    match = REFERENCE.match(lines[0])
    assert match, lines[0]
    assert (match.group(4) is not None) == is_mask


DEMO_CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "demo").glob("*.yaml"))


@pytest.mark.parametrize("path", DEMO_CONFIGS, ids=[p.stem for p in DEMO_CONFIGS])
def test_demo_config_builds(path):
    """configs/demo/*.yaml (trained from scratch on the digits set): merge and build."""
    cfg = _load(path)
    assert cfg.MODEL.WEIGHTS == "" and set(cfg.DATASETS.TRAIN) == {"digits_train"}
    model = _meta_model(cfg)
    assert model.roi_heads.num_classes == 10
    assert cfg.MODEL.MASK_ON == hasattr(model.roi_heads, "mask_head")
    if cfg.MODEL.MASK_ON:  # the digits set's masks are RLE, which detectron2 reads as bitmasks
        assert cfg.INPUT.MASK_FORMAT == "bitmask"
