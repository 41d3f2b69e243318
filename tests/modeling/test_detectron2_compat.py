"""detectron2's own ResNeXt configs run with our backbone by changing only its NAME, and
a checkpoint of detectron2's built-in ResNe(X)t loads into ours and gives the same outputs."""
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import resnext_det
from resnext_det.utils.testing import randomize_norms_

# (model zoo config, our backbone, our ROI head or None to keep detectron2's)
CASES = [
    ("COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml", "build_resnext_fpn_backbone", None),
    ("COCO-Detection/retinanet_R_50_FPN_1x.yaml", "build_retinanet_resnext_fpn_backbone", None),
    ("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml", "build_resnext_backbone", "ResNeXtRes5ROIHeads"),
]


def _zoo_cfg(config_file, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 96,
                         "INPUT.MAX_SIZE_TEST", 128,
                         # keep low-scoring detections, so that random weights still output boxes
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                         "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0, *overrides])
    return cfg


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return [{"image": (torch.rand(3, 90, 120, generator=gen) * 255), "height": 90, "width": 120}]


@pytest.mark.parametrize("config_file,backbone,roi_head", CASES)
def test_detectron2_checkpoint_loads_and_matches(config_file, backbone, roi_head):
    theirs_cfg = _zoo_cfg(config_file)
    ours_overrides = ["MODEL.BACKBONE.NAME", backbone]
    if roi_head:
        ours_overrides += ["MODEL.ROI_HEADS.NAME", roi_head]
    if "C4" in config_file:  # also make the C4 case a ResNeXt
        groups = ["MODEL.RESNETS.NUM_GROUPS", 8, "MODEL.RESNETS.WIDTH_PER_GROUP", 8]
        theirs_cfg.merge_from_list(groups)
        ours_overrides += groups
    ours_cfg = theirs_cfg.clone()
    ours_cfg.merge_from_list(ours_overrides)  # no add_resnext_config: a plain detectron2 cfg

    theirs = randomize_norms_(build_model(theirs_cfg)).eval()
    ours = build_model(ours_cfg).eval()
    assert type(ours.backbone) is type(theirs.backbone)
    incompatible = ours.load_state_dict(theirs.state_dict(), strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys

    images = ours.preprocess_image(_inputs())
    with torch.no_grad():
        f_ours, f_theirs = ours.backbone(images.tensor), theirs.backbone(images.tensor)
        out_ours, out_theirs = ours(_inputs()), theirs(_inputs())
    for name in f_theirs:
        assert torch.allclose(f_ours[name], f_theirs[name], rtol=1e-5, atol=1e-6), name
    a, b = out_ours[0]["instances"], out_theirs[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=1e-4, atol=1e-3)


def test_zoo_config_with_our_keys_merges():
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml"))
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnext_fpn_backbone",
                         "MODEL.RESNEXT.TEMPLATE", "X101_32x8d", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert model.backbone.bottom_up.res2[0].conv2.groups == 32
    assert len(model.backbone.bottom_up.res4) == 23
