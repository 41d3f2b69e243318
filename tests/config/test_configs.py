"""Every shipped config merges, builds its model and states what the paper reports."""
import re
from pathlib import Path

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import resnext_det
from resnext_det.config.paper import COCO_C4_AP
from resnext_det.modeling.config_args import resolve_template

CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("Base-"))


def _load(path):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_with_paper_conventions(path):
    cfg = _load(path)
    model = build_model(cfg)
    backbone = getattr(model.backbone, "bottom_up", model.backbone)
    template = resolve_template(cfg)
    assert backbone.template == template
    assert template.name in path.stem
    # the paper's stride placement and the torchvision-style input of the weights it expects
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_STD[0] == pytest.approx(58.395)
    assert cfg.MODEL.WEIGHTS.startswith("pretrained/")


def test_paper_configs_state_the_paper_numbers():
    c4 = [p for p in CONFIGS if "FPN" not in p.stem and p.stem.startswith("faster_rcnn")]
    assert len(c4) == len(COCO_C4_AP)
    for path in c4:
        cfg = _load(path)
        assert cfg.MODEL.ROI_HEADS.NAME == "ResNeXtRes5ROIHeads"
        assert cfg.DATASETS.TEST == ("coco_2014_minival",)
        ap, ap50 = COCO_C4_AP[resolve_template(cfg).name]
        assert re.search(rf"\b{ap} AP / {ap50} AP50\b", path.read_text()), path.name
