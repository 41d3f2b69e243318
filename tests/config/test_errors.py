"""Bad configurations raise ConfigError naming the key and the values that work."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.roi_heads import Res5ROIHeads

import resnext_det
from resnext_det import ConfigError
from tests.helpers import make_cfg

FPN_FEATURES = ["res2", "res3", "res4", "res5"]


@pytest.mark.parametrize("overrides,backbone,pattern", [
    (["MODEL.RESNETS.DEPTH", 34], None, r"MODEL.RESNETS.DEPTH=34 .*\[50, 101, 152\]"),
    (["MODEL.RESNETS.NUM_GROUPS", 0], None, r"MODEL.RESNETS.NUM_GROUPS=0 .*>= 1"),
    (["MODEL.RESNETS.WIDTH_PER_GROUP", 0], None, r"MODEL.RESNETS.WIDTH_PER_GROUP=0"),
    (["MODEL.RESNETS.NORM", "LayerNorm"], None, r"MODEL.RESNETS.NORM='LayerNorm' .*'FrozenBN'"),
    # 2x40d: the res2 bottleneck is 80 channels, which GroupNorm(32) cannot split.
    (["MODEL.RESNEXT.TEMPLATE", "X50_2x40d", "MODEL.RESNETS.NORM", "GN"], None,
     r"NORM='GN' .*width 80 .*divisible by 32"),
    (["MODEL.RESNETS.NORM", "GN", "MODEL.RESNEXT.BLOCK_FORM", "a"], None,
     r"MODEL.RESNEXT.BLOCK_FORM='a' .*per-channel"),
    (["MODEL.RESNEXT.BLOCK_FORM", "d"], None, r"MODEL.RESNEXT.BLOCK_FORM='d' .*'a', 'b', 'c'"),
    (["MODEL.RESNEXT.ZERO_INIT_RESIDUAL", True], None, r"ZERO_INIT_RESIDUAL=True .*FrozenBN"),
    (["MODEL.BACKBONE.FREEZE_AT", 7], None, r"MODEL.BACKBONE.FREEZE_AT=7 .*0..5"),
    (["MODEL.RESNETS.RES5_DILATION", 4], None, r"MODEL.RESNETS.RES5_DILATION=4 .*\[1, 2\]"),
    (["MODEL.RESNETS.OUT_FEATURES", ["res6"]], None, r"MODEL.RESNETS.OUT_FEATURES=\['res6'\]"),
    (["MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4"], "MODEL.FPN.IN_FEATURES", FPN_FEATURES],
     "build_resnext_fpn_backbone", r"MODEL.FPN.IN_FEATURES=.*\['res5'\] not produced"),
    # get_cfg()'s C4 setup with only the FPN backbone's name: detectron2's FPN asserted
    ([], "build_resnext_fpn_backbone", r"MODEL.FPN.IN_FEATURES=\[\] .*produces: \['res4'\]"),
    # DC5 under an FPN: detectron2's FPN asserted "Strides 16 16 are not log2 contiguous"
    (["MODEL.RESNETS.RES5_DILATION", 2, "MODEL.RESNETS.OUT_FEATURES", FPN_FEATURES,
      "MODEL.FPN.IN_FEATURES", FPN_FEATURES], "build_resnext_fpn_backbone",
     r"MODEL.RESNETS.RES5_DILATION=2 .*expected 1 with an FPN on res5"),
    (["MODEL.RESNETS.OUT_FEATURES", ["res3", "res4"], "MODEL.FPN.IN_FEATURES", ["res3", "res4"]],
     "build_retinanet_resnext_fpn_backbone", r"OUT_FEATURES=\['res3', 'res4'\] .*'res5'"),
    (["MODEL.RESNEXT.TEMPLATE", "X50_32x4d", "MODEL.RESNETS.DEPTH", 101], None,
     r"MODEL.RESNETS.DEPTH=101 .*50 \(from MODEL.RESNEXT.TEMPLATE='X50_32x4d'\)"),
    (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, False, False],
      "MODEL.RESNEXT.BLOCK_FORM", "a"], None,
     r"MODEL.RESNEXT.BLOCK_FORM='a' .*'c' when MODEL.RESNETS.DEFORM_ON_PER_STAGE"),
])
def test_bad_backbone_config(overrides, backbone, pattern):
    cfg = make_cfg(*overrides, backbone=backbone or "build_resnext_backbone")
    with pytest.raises(ConfigError, match=pattern):
        build_backbone(cfg, ShapeSpec(channels=3))


def test_roi_head_feature_not_produced():
    cfg = make_cfg("MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads",
                   "MODEL.ROI_HEADS.IN_FEATURES", ["res3"], "MODEL.RPN.IN_FEATURES", ["res4"],
                   "MODEL.RESNEXT.TEMPLATE", "X50_2x4d")
    with pytest.raises(ConfigError, match=r"MODEL.ROI_HEADS.IN_FEATURES=\['res3'\].*not produced"):
        build_model(cfg)


def test_res5_dilation_with_the_res5_roi_head_is_an_error():
    """detectron2's own Res5ROIHeads builds res5 undilated whatever RES5_DILATION says (its
    3x3s computed here): the key trained nothing, so ours names it."""
    d2_cfg = get_cfg()
    d2_cfg.merge_from_list(["MODEL.RESNETS.RES5_DILATION", 2, "MODEL.RESNETS.RES2_OUT_CHANNELS",
                            16, "MODEL.RESNETS.WIDTH_PER_GROUP", 2])
    res5, _ = Res5ROIHeads._build_res5_block(d2_cfg)
    assert {m.dilation for m in res5.modules() if isinstance(m, torch.nn.Conv2d)} == {(1, 1)}
    cfg = make_cfg("MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads", "MODEL.RESNETS.OUT_FEATURES",
                   ["res4"], "MODEL.RESNEXT.TEMPLATE", "X50_2x4d",
                   "MODEL.RESNETS.RES5_DILATION", 2)
    with pytest.raises(ConfigError, match=r"MODEL.RESNETS.RES5_DILATION=2 .*expected 1 with "
                                          r"MODEL.ROI_HEADS.NAME 'ResNeXtRes5ROIHeads'"):
        build_model(cfg)


def test_add_resnext_config_changes_no_detectron2_default():
    plain = get_cfg()
    extended = resnext_det.add_resnext_config(get_cfg())
    resnext = extended.MODEL.pop("RESNEXT")
    added = {key: extended.DATALOADER.pop(key)
             for key in ("ON_BAD_BOX", "ON_BAD_IMAGE", "RANDOM_SUBSET_RATIO")}
    assert added == {"ON_BAD_BOX": "skip", "ON_BAD_IMAGE": "error", "RANDOM_SUBSET_RATIO": 1.0}
    assert extended.DATASETS.pop("TRAIN_REPEAT_FACTOR") == []  # read by detectron2's loader
    assert extended.TEST.pop("COCO_EVAL_BACKEND") == "faster-coco-eval"
    assert extended.TEST.pop("IMS_PER_BATCH") == 1
    assert extended.dump() == plain.dump()
    assert resnext.BLOCK_FORM == "c" and resnext.TEMPLATE == ""


def test_add_resnext_config_is_idempotent():
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.MODEL.RESNEXT.BLOCK_FORM = "a"
    assert resnext_det.add_resnext_config(cfg).MODEL.RESNEXT.BLOCK_FORM == "a"


def test_builder_works_without_add_resnext_config():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnext_backbone"
    cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 2, 4
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert backbone.res2[0].conv2.groups == 2


# The features each head reads are checked against the backbone's outputs before the build
# (detectron2: a KeyError naming only the feature). The oracle for what a backbone outputs
# is the built backbone's own output_shape() (detectron2's FPN names its levels).
@pytest.mark.parametrize("backbone, overrides", [
    ("build_resnext_backbone", []),
    ("build_resnext_backbone", ["MODEL.RESNETS.OUT_FEATURES", ["res2", "res5"]]),
    ("build_resnext_fpn_backbone", ["MODEL.RESNETS.OUT_FEATURES", FPN_FEATURES,
                                    "MODEL.FPN.IN_FEATURES", FPN_FEATURES]),
    ("build_resnext_fpn_backbone", ["MODEL.RESNETS.OUT_FEATURES", ["res3", "res4"],
                                    "MODEL.FPN.IN_FEATURES", ["res3", "res4"]]),
    ("build_retinanet_resnext_fpn_backbone", ["MODEL.RESNETS.OUT_FEATURES", ["res3", "res4", "res5"],
                                              "MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"]]),
])
def test_head_features_are_checked_against_what_the_backbone_outputs(backbone, overrides):
    from resnext_det.config.checks import check_resnext_keys

    cfg = make_cfg(*overrides, "MODEL.RESNEXT.TEMPLATE", "X50_2x4d", backbone=backbone)
    produced = list(build_backbone(cfg, ShapeSpec(channels=3)).output_shape())
    retina = "retinanet" in backbone
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet" if retina else "GeneralizedRCNN"
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"  # a head of several features (res5's: one)
    heads = ["RETINANET"] if retina else ["RPN", "ROI_HEADS"]
    for head in heads:
        cfg.MODEL[head].IN_FEATURES = produced
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32]]
    check_resnext_keys(cfg)  # every produced feature is taken
    for head in heads:
        cfg.MODEL[head].IN_FEATURES = produced + ["p9"]
        with pytest.raises(ConfigError, match=rf"MODEL.{head}.IN_FEATURES=.*\['p9'\] not produced"):
            check_resnext_keys(cfg)
        cfg.MODEL[head].IN_FEATURES = produced
