"""A pretraining checkpoint is MODEL.WEIGHTS of a detector, with no manual step."""
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from resnext_det.checkpoint import read_weights
from resnext_det.config.weights import config_mismatches
from resnext_det.classification import build_cls_model, get_cls_cfg, main
from resnext_det.engine import build_checkpointer, setup_cfg
from tests.helpers import load_tool

from .helpers import cls_args, tiny_opts, write_folder

demo_args = load_tool("demo").demo_args  # tools/demo.py: the one-process train_net arguments

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")
DIGITS_CLS = str(ROOT / "configs/cls/digits_X50_8x4d.yaml")
TINY_DETECTOR = ["MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
                 "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.FPN.OUT_CHANNELS", "16",
                 "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    main(cls_args(tiny_opts(write_folder(out / "data"), out, "SOLVER.MAX_ITER", 2)))
    return out


def _backbone(model):
    return {k[len("backbone.bottom_up."):]: v for k, v in model.state_dict().items()
            if k.startswith("backbone.bottom_up.")}


@pytest.mark.parametrize("name", ["model_final.pkl", "model_final.pth"])
def test_checkpoint_starts_the_demo_detector(pretrained, tmp_path, name):
    path = str(pretrained / name)
    cfg = setup_cfg(demo_args(DEMO, TINY_DETECTOR + [
        "MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path),
        "MODEL.RESNEXT.CONFIG_FROM_WEIGHTS", "True"]),  # reads the .pkl's metadata: no change
        task="train")
    model = build_model(cfg)
    checkpointer = build_checkpointer(cfg, model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    missing = [k for k in checkpointer.last_incompatible.missing_keys
               if k.startswith("backbone.bottom_up.") and "num_batches_tracked" not in k]
    assert missing == []
    weights = read_weights(pretrained / "model_final.pth").obj
    backbone = _backbone(model)
    assert len(backbone) > 100
    for key, value in backbone.items():
        if "num_batches_tracked" not in key:
            assert torch.equal(value, weights["model"][key]), key
    assert config_mismatches(cfg, weights["resnext_det"]) == []  # no warning on load
    assert cfg.MODEL.RESNEXT.TEMPLATE == "X50_2x2d"


def test_digits_pretraining_has_the_demo_backbone_shapes(tmp_path):
    """configs/cls/digits_X50_8x4d.yaml builds exactly the demo detector's backbone."""
    cls_cfg = get_cls_cfg()
    cls_cfg.merge_from_file(DIGITS_CLS)
    classifier = build_cls_model(cls_cfg, 10).state_dict()
    det_cfg = setup_cfg(demo_args(DEMO, ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)]),
                        task="train")
    backbone = _backbone(build_model(det_cfg))
    assert {k: v.shape for k, v in backbone.items()} == {
        k: v.shape for k, v in classifier.items() if not k.startswith("linear.")}
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        assert list(cls_cfg.MODEL[key]) == list(det_cfg.MODEL[key])
    assert cls_cfg.INPUT.FORMAT == det_cfg.INPUT.FORMAT
    assert cls_cfg.MODEL.RESNETS.STRIDE_IN_1X1 == det_cfg.MODEL.RESNETS.STRIDE_IN_1X1
