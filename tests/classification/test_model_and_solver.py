"""ResNeXt-29 against the paper's parameter counts, the configs, the lr schedule, top-k."""
import math
from pathlib import Path

import pytest
import torch

from resnext_det.classification import build_cifar_resnext, build_cls_model, get_cls_cfg
from resnext_det.classification.evaluate import topk_correct
from resnext_det.classification.solver import EpochSchedule, build_schedule, scaled_lr
from resnext_det.config.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cls"


@pytest.mark.parametrize("template, paper_millions", [("X29_8x64d", 34.4), ("X29_16x64d", 68.1)])
def test_resnext29_params_match_the_paper(template, paper_millions):
    """Paper Table 7 (CIFAR-10): 34.4M and 68.1M parameters; ours within 0.5%."""
    model = build_cifar_resnext(template, num_classes=10)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(paper_millions, rel=0.005)


def test_resnext29_shapes():
    model = build_cifar_resnext("X29_2x4d", num_classes=10, stem_out_channels=8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [name for name, _ in model.named_children()][:4] == ["stem", "res2", "res3", "res4"]
    assert model.res4[0].conv2.stride == (2, 2)  # stride in the 3x3
    assert model.res2[0].conv2.out_channels == 2 * 4 and model.res4[0].conv2.out_channels == 2 * 16


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")
                                        if not p.name.startswith("Base-")))
def test_shipped_configs_build(name):
    cfg = get_cls_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.MODEL.DEVICE = "cpu"
    if "16x64d" in name:  # 68M parameters: the template alone is checked above
        return
    model = build_cls_model(cfg, 10).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_config_errors_name_the_key():
    cfg = get_cls_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "SyncBN"
    with pytest.raises(ConfigError, match="MODEL.RESNETS.NORM"):
        build_cls_model(cfg, 10)
    cfg.MODEL.RESNETS.NORM, cfg.MODEL.ARCH = "BN", "cifar"
    cfg.MODEL.RESNEXT.TEMPLATE = "X50_32x4d"
    with pytest.raises(ConfigError, match="MODEL.RESNEXT.TEMPLATE"):
        build_cls_model(cfg, 10)


def test_step_schedule_and_linear_scaling():
    cfg = get_cls_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 512
    schedule = build_schedule(cfg, iters_per_epoch=100)
    assert scaled_lr(0.1, 512, 256) == schedule.lr == pytest.approx(0.2)
    lrs = [schedule.lr_at(epoch * 100) for epoch in (0, 29, 30, 60, 89, 90, 99)]
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.002, 0.002, 0.0002, 0.0002])


def test_cosine_and_warmup():
    schedule = EpochSchedule(0.1, 10, 20, kind="cosine", warmup_epochs=2, warmup_factor=0.1)
    assert schedule.lr_at(0) == pytest.approx(0.01)
    assert schedule.lr_at(10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 20)) * 0.55)
    assert schedule.lr_at(100) == pytest.approx(0.05)
    assert schedule.lr_at(200) == pytest.approx(0.0, abs=1e-12)


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 2, 0]), ks=(1, 2, 5)) == [1, 1, 3]
