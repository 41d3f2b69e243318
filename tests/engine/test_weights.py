"""MODEL.WEIGHTS may be a torchvision file: converted once, cached, config set from it."""
import argparse

import pytest
import torch
import torchvision
from detectron2.modeling import build_model

from resnext_det.engine import build_checkpointer, setup_cfg
from tests.engine.test_train_net import CONFIG


def _torchvision_file(tmp_path):
    # a ResNeXt-50 2x2d in torchvision's naming (groups=2, width_per_group=2)
    net = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3],
                                           groups=2, width_per_group=2)
    path = tmp_path / "tv_resnext.pth"
    torch.save(net.state_dict(), path)
    return path


def _args(tmp_path, *opts):
    return argparse.Namespace(config_file=CONFIG, opts=[str(o) for o in opts], eval_only=True,
                              resume=False, num_gpus=1)


def test_config_from_weights_and_cached_conversion(tmp_path):
    weights = _torchvision_file(tmp_path)
    cfg = setup_cfg(_args(tmp_path, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", tmp_path / "out",
                          "MODEL.RESNEXT.CONFIG_FROM_WEIGHTS", True,
                          "MODEL.RESNETS.STRIDE_IN_1X1", True, "INPUT.FORMAT", "BGR",
                          "MODEL.RESNETS.STEM_OUT_CHANNELS", 64,
                          "MODEL.RESNETS.RES2_OUT_CHANNELS", 256), task="evaluate")
    assert cfg.MODEL.RESNEXT.TEMPLATE == "X50_2x2d"
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.INPUT.FORMAT == "RGB"
    # torchvision's own ImageNet normalization (its weights' transform), in 0..255 pixels
    transform = torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1.transforms()
    assert list(cfg.MODEL.PIXEL_STD) == pytest.approx([255 * s for s in transform.std], rel=1e-9)
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx([255 * m for m in transform.mean],
                                                       rel=1e-9)
    cached = list((tmp_path / "out" / "converted_weights").glob("tv_resnext-*.pkl"))
    assert len(cached) == 1

    model = build_model(cfg)
    checkpointer = build_checkpointer(cfg, model)
    checkpointer.load(str(weights))
    incompatible = checkpointer.last_incompatible
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up.")]
    assert not incompatible.unexpected_keys
    stem = model.backbone.bottom_up.stem.conv1.weight
    tv = torch.load(weights)["conv1.weight"]
    assert torch.equal(stem, tv)
    assert list((tmp_path / "out" / "converted_weights").glob("*.pkl")) == cached  # reused


def test_config_disagreeing_with_weights_is_one_log_line(tmp_path):
    weights = _torchvision_file(tmp_path)
    out = tmp_path / "out"
    cfg = setup_cfg(_args(tmp_path, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out,
                          "MODEL.RESNEXT.TEMPLATE", "X50_2x2d",
                          "MODEL.RESNETS.STRIDE_IN_1X1", True,
                          "MODEL.RESNETS.STEM_OUT_CHANNELS", 64,
                          "MODEL.RESNETS.RES2_OUT_CHANNELS", 256), task="evaluate")
    build_checkpointer(cfg, build_model(cfg)).load(str(weights))
    lines = [line for line in (out / "log.txt").read_text().splitlines()
             if "MODEL.RESNETS.STRIDE_IN_1X1=True but the torchvision weights" in line]
    assert len(lines) == 1 and "trained with False" in lines[0]
