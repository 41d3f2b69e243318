"""Backbones built by detectron2 from a config: names, shapes, strides, options."""
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, build_backbone, build_model

import resnext_det  # noqa: F401  (registration)
from resnext_det.modeling.blocks import BLOCK_FORMS
from tests.helpers import make_cfg

SMALL = ("MODEL.RESNEXT.TEMPLATE", "X50_4x4d")


def test_import_registers_backbones_and_head():
    for name in ["build_resnext_backbone", "build_resnext_fpn_backbone",
                 "build_retinanet_resnext_fpn_backbone"]:
        assert name in BACKBONE_REGISTRY
    assert "ResNeXtRes5ROIHeads" in ROI_HEADS_REGISTRY


def _check_shapes(backbone, image):
    with torch.no_grad():
        outputs = backbone(image)
    shapes = backbone.output_shape()
    assert set(outputs) == set(shapes)
    for name, out in outputs.items():
        assert out.shape[1] == shapes[name].channels, name
        assert image.shape[-1] // out.shape[-1] == shapes[name].stride, name
    return {k: (v.channels, v.stride) for k, v in shapes.items()}


def test_c4_backbone(image):
    cfg = make_cfg(*SMALL)  # detectron2's default OUT_FEATURES: ["res4"]
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert _check_shapes(backbone.eval(), image) == {"res4": (1024, 16)}
    assert not hasattr(backbone, "res5")  # res5 is the ROI head in the C4 setup


def test_all_stages_and_dilated_res5(image):
    cfg = make_cfg(*SMALL, "MODEL.RESNETS.OUT_FEATURES", ["stem", "res2", "res3", "res4", "res5"])
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert _check_shapes(backbone, image) == {
        "stem": (64, 4), "res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    dilated = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert _check_shapes(dilated, image)["res5"] == (2048, 16)
    assert dilated.res5[0].conv2.dilation == (2, 2)


def test_fpn_backbone(image):
    cfg = make_cfg(*SMALL, "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
                   "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
                   backbone="build_resnext_fpn_backbone")
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert _check_shapes(backbone, image) == {
        "p2": (256, 4), "p3": (256, 8), "p4": (256, 16), "p5": (256, 32), "p6": (256, 64)}


def test_retinanet_fpn_backbone():
    image = torch.rand(1, 3, 128, 128)
    cfg = make_cfg(*SMALL, "MODEL.RESNETS.OUT_FEATURES", ["res3", "res4", "res5"],
                   "MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"],
                   backbone="build_retinanet_resnext_fpn_backbone")
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert _check_shapes(backbone, image) == {
        "p3": (256, 8), "p4": (256, 16), "p5": (256, 32), "p6": (256, 64), "p7": (256, 128)}


@pytest.mark.parametrize("form", list(BLOCK_FORMS))
def test_c4_faster_rcnn_builds_res5_head_of_the_same_form(form):
    cfg = make_cfg(*SMALL, "MODEL.RESNEXT.BLOCK_FORM", form,
                   "MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads")
    model = build_model(cfg)
    res5 = model.roi_heads.res5
    assert len(res5) == 3 and res5[0].stride == 2
    assert type(res5[0]) is type(model.backbone.res4[0])
    assert res5[0].cardinality == 4 and res5[0].bottleneck_width == 4 * 8
    assert res5[-1].out_channels == 2048


def test_template_sets_depth_cardinality_width():
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X101_8x2d")
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert len(backbone.res4) == 23
    assert backbone.res2[0].conv2.groups == 8 and backbone.res2[0].conv2.out_channels == 16


def test_stride_placement():
    msra = build_backbone(make_cfg(*SMALL, "MODEL.RESNETS.STRIDE_IN_1X1", True), ShapeSpec(channels=3))
    torch_style = build_backbone(make_cfg(*SMALL, "MODEL.RESNETS.STRIDE_IN_1X1", False),
                                 ShapeSpec(channels=3))
    assert msra.res3[0].conv1.stride == (2, 2) and msra.res3[0].conv2.stride == (1, 1)
    assert torch_style.res3[0].conv1.stride == (1, 1) and torch_style.res3[0].conv2.stride == (2, 2)


def test_freeze_at_and_norms():
    cfg = make_cfg(*SMALL, "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", 2)
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.res2.parameters())
    assert all(p.requires_grad for p in backbone.res3.parameters())
    assert isinstance(backbone.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(backbone.res3[0].conv1.norm, torch.nn.BatchNorm2d)
    gn = build_backbone(make_cfg(*SMALL, "MODEL.RESNETS.NORM", "GN", "MODEL.RESNEXT.TEMPLATE",
                                 "X50_32x4d"), ShapeSpec(channels=3))
    assert isinstance(gn.res2[0].conv2.norm, torch.nn.GroupNorm)
    sync = build_backbone(make_cfg(*SMALL, "MODEL.RESNETS.NORM", "SyncBN"), ShapeSpec(channels=3))
    assert isinstance(sync.res3[0].conv2.norm, torch.nn.SyncBatchNorm)


def test_zero_init_residual_from_config():
    cfg = make_cfg(*SMALL, "MODEL.RESNETS.NORM", "BN", "MODEL.RESNEXT.ZERO_INIT_RESIDUAL", True)
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert all(b.conv3.norm.weight.detach().abs().sum().item() == 0 for b in backbone.res3)
    assert backbone.res3[0].conv2.norm.weight.detach().abs().sum().item() > 0


def test_classifier_logits(image):
    model = resnext_det.resnext_classifier("X50_2x4d", num_classes=7).eval()
    assert model(image).shape == (2, 7)


def test_build_resnext_takes_a_template_name_as_the_readme_calls_it(image):
    """README "The model": build_resnext(template, out_features=[...]) beside
    resnext_classifier("X50_32x4d"): a name raised AttributeError ('str' object has no
    attribute 'stage_blocks'). Its features are those of detectron2's own ResNeXt with the
    same weights (NUM_GROUPS 32, WIDTH_PER_GROUP 4, stride in the 3x3)."""
    from detectron2.config import get_cfg
    from detectron2.modeling.backbone import build_resnet_backbone

    from resnext_det.modeling import build_resnext

    ours = build_resnext("X50_32x4d", out_features=["res4", "res5"], stride_in_1x1=False)
    cfg = get_cfg()
    cfg.MODEL.RESNETS.merge_from_list(["NUM_GROUPS", 32, "WIDTH_PER_GROUP", 4, "STRIDE_IN_1X1",
                                       False, "OUT_FEATURES", ["res4", "res5"], "NORM", "BN"])
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    theirs = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        got, want = ours.eval()(image), theirs(image)
    assert sorted(got) == ["res4", "res5"]
    for name in got:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-5), name
