"""Our own files: the paper's other block forms as a target, and a detector checkpoint as a source."""
import pytest
import torch

from ckpt_helpers import TINY, FEATURES, ours_backbone, ours_classifier
from resnext_det.checkpoint import convert_weights
from resnext_det.checkpoint.block_forms import from_grouped
from resnext_det.modeling.blocks import BLOCK_FORMS
from resnext_det.utils.testing import max_rel_error, randomize_norms_

TOL = 1e-5


def _outputs(model, images):
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("form", [f for f in BLOCK_FORMS if f != "c"])  # c: the source's
def test_block_form_target(form, tiny_model, tiny_state, images, tmp_path):
    torch.save(tiny_state, tmp_path / "ours.pth")
    result = convert_weights(tmp_path / "ours.pth", keep_fc=True, block_form=form)
    assert result.metadata.block_form == form
    assert set(result.state_dict) == set(from_grouped(tiny_state, form))
    model = ours_classifier(TINY, result.state_dict, num_classes=10, block_form=form)
    assert max_rel_error(_outputs(model, images), _outputs(tiny_model, images)) < TOL


def test_detection_checkpoint_of_ours(images, tmp_path):
    """A C4 detector's checkpoint: backbone.* and roi_heads.res5.* become ours again.

    The detector is detectron2's own C4 Faster R-CNN (build_resnet_backbone with res2..res4,
    Res5ROIHeads holding res5; NUM_GROUPS 2, WIDTH_PER_GROUP 4: X50_2x4d), saved by its
    DetectionCheckpointer; our backbone loaded with the conversion computes detectron2's
    res2..res4 and its ROI head's res5 on res4."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()  # detectron2's defaults are its C4 detector
    cfg.MODEL.DEVICE = "cpu"
    assert (cfg.MODEL.BACKBONE.NAME, cfg.MODEL.ROI_HEADS.NAME) == ("build_resnet_backbone",
                                                                    "Res5ROIHeads")
    cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 2, 4
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 256, "BN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = FEATURES[:3]  # res4 feeds the RPN and the ROI heads
    torch.manual_seed(0)
    detector = randomize_norms_(build_model(cfg)).eval()
    assert not any(k.startswith("backbone.res5") for k in detector.state_dict())
    DetectionCheckpointer(detector, save_dir=str(tmp_path)).save("model_final")
    result = convert_weights(tmp_path / "model_final.pth")
    assert (result.metadata.source_format, result.metadata.template) == ("resnext_det", TINY)
    with torch.no_grad():
        expected = detector.backbone(images)
        expected["res5"] = detector.roi_heads.res5(expected["res4"])
        got = ours_backbone(TINY, result.state_dict, norm="BN")(images)
    assert set(expected) == set(FEATURES)
    for name in FEATURES:
        assert max_rel_error(got[name], expected[name]) < TOL, name
