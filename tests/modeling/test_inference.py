"""optimize_for_inference: norms folded, NHWC weights, same outputs, original untouched."""
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model

from resnext_det.modeling.blocks import BLOCK_FORMS
from resnext_det.modeling.inference import fold_norms, optimize_for_inference
from resnext_det.utils.testing import detection_error, max_rel_error, randomize_norms_
from tests.helpers import make_cfg

FEATURES = ["res2", "res3", "res4", "res5"]


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
@pytest.mark.parametrize("form", list(BLOCK_FORMS))
def test_backbone_outputs_unchanged(norm, form, image):
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_4x4d", "MODEL.RESNETS.NORM", norm,
                   "MODEL.RESNEXT.BLOCK_FORM", form, "MODEL.RESNETS.OUT_FEATURES", FEATURES)
    model = randomize_norms_(build_backbone(cfg, ShapeSpec(channels=3))).eval()
    norms = sum(isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)) for m in model.modules())
    fast = optimize_for_inference(model)
    assert fast.folded_norms == norms  # every norm folded
    assert not any(isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)) for m in fast.modules())
    assert fast.res2[0].shortcut.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref, out = model(image), fast(image)
    assert max_rel_error(out, ref) < 1e-5
    assert model.res2[0].shortcut.norm is not None  # the original keeps its norms


@pytest.mark.parametrize("norm", ["BN", "SyncBN"])
def test_training_bn_is_not_folded(norm):
    """A BN or SyncBN in training mode normalizes by batch statistics: folding its running
    ones would change the outputs (SyncBatchNorm is not a BatchNorm2d subclass)."""
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.NORM", norm,
                   "MODEL.BACKBONE.FREEZE_AT", 0)
    model = build_backbone(cfg, ShapeSpec(channels=3)).train()
    assert fold_norms(model) == 0
    assert fold_norms(model.eval()) > 0


def test_faster_rcnn_detections_unchanged():
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_4x4d", "MODEL.ROI_HEADS.NAME",
                   "ResNeXtRes5ROIHeads", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                   "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128)
    torch.manual_seed(0)
    model = randomize_norms_(build_model(cfg)).eval()
    fast = optimize_for_inference(model)
    inputs = [{"image": torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)) * 255}]
    with torch.no_grad():
        a, b = model(inputs)[0]["instances"], fast(inputs)[0]["instances"]
    assert len(a) == len(b) > 0
    assert detection_error(b, a) < 1e-3  # float32 through an untrained head: ~1e-4


def test_fast_inference_config_modes():
    from resnext_det.config import ConfigError
    from resnext_det.engine.trainer import inference_model

    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x2d")
    model = build_model(cfg)
    assert inference_model(cfg, model) is not model  # default: "fold+nhwc"
    cfg.MODEL.RESNEXT.FAST_INFERENCE = ""
    assert inference_model(cfg, model) is model
    cfg.MODEL.RESNEXT.FAST_INFERENCE = "fold"
    folded = inference_model(cfg, model)
    assert folded.folded_norms > 0
    assert folded.backbone.res2[0].conv1.weight.is_contiguous()  # NCHW kept
    cfg.MODEL.RESNEXT.FAST_INFERENCE = "turbo"
    with pytest.raises(ConfigError, match=r"FAST_INFERENCE='turbo' .*'fold\+nhwc'"):
        inference_model(cfg, model)


@pytest.mark.parametrize("roi_align, pooler", [("sparse", "SparseROIPooler"),
                                               ("torchvision", "ROIPooler")])
def test_fpn_copy_pools_as_asked_with_the_same_detections(roi_align, pooler):
    """The fast copy of a Faster R-CNN FPN pools its 4 levels with the sparse ROIAlign by
    default; its detections are those of the model as built (detectron2's ROIPooler)."""
    from tests.tools.test_predict import spread_class_scores_, tiny_cfg

    torch.manual_seed(0)
    model = spread_class_scores_(randomize_norms_(build_model(tiny_cfg()))).eval()
    fast = optimize_for_inference(model, roi_align=roi_align)
    assert type(model.roi_heads.box_pooler).__name__ == "ROIPooler"  # the original untouched
    assert type(fast.roi_heads.box_pooler).__name__ == pooler
    assert len(fast.roi_heads.box_pooler.level_poolers) == 4
    inputs = [{"image": torch.rand(3, 160, 224, generator=torch.Generator().manual_seed(0)) * 255}]
    with torch.no_grad():
        a, b = model(inputs)[0]["instances"], fast(inputs)[0]["instances"]
    assert len(a) == len(b) > 0
    assert detection_error(b, a) < 1e-3
