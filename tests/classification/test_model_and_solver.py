"""ResNeXt-29 against the paper's parameter counts, the configs, the lr schedule, top-k."""
import math
from pathlib import Path

import pytest
import torch
from detectron2.solver import LRMultiplier

from resnext_det.classification import build_cls_model, get_cls_cfg
from resnext_det.modeling import build_cifar_resnext
from resnext_det.classification.evaluator import topk_correct
from resnext_det.classification.solver import build_param_scheduler, scaled_lr
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
    model = build_cls_model(cfg, 10).eval()  # every config, X29_16x64d's 68M parameters too (~3 s)
    with torch.no_grad():
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
    cfg.MODEL.RESNEXT.TEMPLATE = ""  # C and d from the RESNETS keys (torch: bare RuntimeErrors)
    for key, value in (("NUM_GROUPS", 0), ("WIDTH_PER_GROUP", -4)):
        cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8, 64
        cfg.MODEL.RESNETS[key] = value
        with pytest.raises(ConfigError, match=rf"MODEL.RESNETS.{key}={value} is not valid"):
            build_cls_model(cfg, 10)


def _torch7_sgd(weights, grads, lr, momentum, weight_decay):
    """The authors' update (ResNeXt train.lua: optim.sgd with nesterov = true, dampening 0;
    optim/sgd.lua): dfdx += wd * x; v = dfdx at the first step, else momentum * v + dfdx;
    x -= lr * (dfdx + momentum * v)."""
    x, v = weights.clone(), None
    for g in grads:
        d = g + weight_decay * x
        v = d.clone() if v is None else momentum * v + d
        x = x - lr * (d + momentum * v)
    return x


@pytest.mark.parametrize("name, weight_decay", [("imagenet_X50_32x4d.yaml", 1e-4),
                                                ("cifar10_X29_8x64d.yaml", 5e-4)])
def test_paper_configs_step_as_the_authors_sgd(name, weight_decay):
    """The paper's recipe steps as the authors' Torch code (opts.lua: lr 0.1, momentum 0.9,
    weightDecay 1e-4 on ImageNet, 5e-4 on CIFAR; 256 and 128 images per batch)."""
    from resnext_det.classification.solver import build_optimizer

    cfg = get_cls_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    model = torch.nn.Linear(4, 3)
    start = [p.detach().clone() for p in model.parameters()]
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(4)]
    optimizer = build_optimizer(cfg, model)
    for step in grads:
        for p, g in zip(model.parameters(), step):
            p.grad = g.clone()
        optimizer.step()
    for i, p in enumerate(model.parameters()):
        expected = _torch7_sgd(start[i], [step[i] for step in grads], 0.1, 0.9, weight_decay)
        torch.testing.assert_close(p.detach(), expected)


# The paper's ImageNet recipe (Sec 4, "Implementation details", and the authors' Torch code
# it names, facebookresearch/ResNeXt: opts.lua 100 epochs; train.lua lr * 0.1^floor((epoch-1)/30);
# models/resnext.lua BNInit fills every norm's weight with 1), copied from those sources.
PAPER_IMAGENET = {"ims_per_batch": 256, "base_lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                  "epochs": 100, "lr_steps": (30, 60, 90), "train_crop": 224,
                  "test_resize": 256, "test_crop": 224, "stride_in_1x1": False,
                  "norm_scale_init": 1.0}


def _recipe(cfg):
    """The keys of a classification config that the paper's recipe fixes, by its names."""
    s, inp = cfg.SOLVER, cfg.INPUT
    return {"ims_per_batch": s.IMS_PER_BATCH, "base_lr": scaled_lr(s), "momentum": s.MOMENTUM,
            "weight_decay": s.WEIGHT_DECAY, "epochs": s.MAX_EPOCHS, "lr_steps": tuple(s.STEPS),
            "train_crop": inp.TRAIN_SIZE, "test_resize": inp.TEST_RESIZE,
            "test_crop": inp.TEST_CROP, "stride_in_1x1": cfg.MODEL.RESNETS.STRIDE_IN_1X1}


@pytest.mark.parametrize("name", ["imagenet_R50.yaml", "imagenet_X50_32x4d.yaml"])
def test_imagenet_configs_are_the_paper_recipe(name):
    """The configs that quote the paper's Table 3 error train with its recipe, norms
    included: each starts at scale 1 (He init, as the authors' code); a zero-initialized
    last norm per block (Goyal et al. 2017, later than the paper) is not that recipe."""
    cfg = get_cls_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.SOLVER.LR_SCHEDULER == "step" and cfg.SOLVER.GAMMA == 0.1
    got = _recipe(cfg)
    assert got == {k: PAPER_IMAGENET[k] for k in got}
    norms = [m for m in build_cls_model(cfg, 10).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(bool((m.weight == PAPER_IMAGENET["norm_scale_init"]).all())
                         for m in norms)


def _lrs(cfg, iterations, total):
    """The lr of detectron2's LRMultiplier at each of `iterations` (in increasing order)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=scaled_lr(cfg.SOLVER))
    scheduler, lrs = LRMultiplier(optimizer, build_param_scheduler(cfg.SOLVER), total), []
    for it in range(max(iterations) + 1):
        if it in iterations:
            lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: nothing moves; the order torch expects
        scheduler.step()
    return lrs


def test_step_schedule_and_linear_scaling():
    """lr 0.1 x 512/256, / 10 at epochs 30, 60, 90 of 100 (100 iterations per epoch)."""
    cfg = get_cls_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 512
    lrs = _lrs(cfg, [epoch * 100 for epoch in (0, 29, 30, 60, 89, 90, 99)], total=10000)
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.002, 0.002, 0.0002, 0.0002])
    cfg.SOLVER.MAX_EPOCHS = 50  # steps at or past the end are dropped
    assert build_param_scheduler(cfg.SOLVER)(0.99) == pytest.approx(0.1)


def test_fractional_steps_keep_their_epoch():
    """STEPS (1.5, 2.25) of 3 epochs, 100 iterations each: / 10 at iterations 150 and 225."""
    cfg = get_cls_cfg()
    cfg.SOLVER.merge_from_list(["MAX_EPOCHS", 3, "STEPS", "(1.5, 2.25)", "IMS_PER_BATCH", 256])
    lrs = _lrs(cfg, [0, 100, 149, 150, 224, 225, 299], total=300)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cfg.SOLVER.STEPS = (0.5,)  # half an epoch: no longer truncated to 0
    assert build_param_scheduler(cfg.SOLVER)(0.5 / 3 + 1e-3) == pytest.approx(0.1)


def test_cosine_and_warmup():
    """detectron2's WarmupParamScheduler: linear from 0.1 x lr to the cosine at epoch 2 of 20."""
    cfg = get_cls_cfg()
    cfg.SOLVER.merge_from_list(["LR_SCHEDULER", "cosine", "MAX_EPOCHS", 20, "WARMUP_EPOCHS", 2.0,
                                "IMS_PER_BATCH", 256])
    at_2 = 0.5 * (1 + math.cos(math.pi * 2 / 20))
    lrs = _lrs(cfg, [0, 10, 20, 100, 199], total=200)
    assert lrs == pytest.approx([0.01, 0.1 * (0.1 + at_2) / 2, 0.1 * at_2, 0.05,
                                 0.05 * (1 + math.cos(math.pi * 199 / 200))])


def test_schedule_errors_name_the_key():
    cfg = get_cls_cfg()
    cfg.SOLVER.STEPS = (60, 30)
    with pytest.raises(ConfigError, match="SOLVER.STEPS"):
        build_param_scheduler(cfg.SOLVER)
    cfg.SOLVER.STEPS = (30, 30.0001)  # the same 1/1000 epoch
    with pytest.raises(ConfigError, match="SOLVER.STEPS"):
        build_param_scheduler(cfg.SOLVER)
    cfg.SOLVER.STEPS, cfg.SOLVER.CHECKPOINT_PERIOD = (30,), -1  # was: a checkpoint every iteration
    with pytest.raises(ConfigError, match="SOLVER.CHECKPOINT_PERIOD"):
        build_param_scheduler(cfg.SOLVER)
    cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.LR_SCHEDULER = 0, "poly"
    with pytest.raises(ConfigError, match="SOLVER.LR_SCHEDULER"):
        build_param_scheduler(cfg.SOLVER)
    cfg.SOLVER.LR_SCHEDULER, cfg.SOLVER.MAX_TO_KEEP = "step", -1  # was: detectron2's assert
    with pytest.raises(ConfigError, match=r"SOLVER.MAX_TO_KEEP=-1 .*0: keep all"):
        build_param_scheduler(cfg.SOLVER)


@pytest.mark.parametrize("key, value, expected", [
    ("TRAIN_SIZE", 0, "a whole number >= 1"),  # was: ValueError in a loader worker
    ("TEST_CROP", 0, "a whole number >= 1"),  # was: at the first evaluation
    ("SCALE", (1.0, 0.5), "area fractions 0 < low <= high <= 1"),  # was: a RuntimeError
    ("RATIO", (0.0, 0.0), "aspect ratios 0 < low <= high"),
    ("PAD", -3, "a whole number >= 0"),
])
def test_input_errors_name_the_key_when_the_transforms_are_built(key, value, expected):
    from resnext_det.classification.transforms import build_test_transform, build_train_transform

    cfg = get_cls_cfg()
    cfg.INPUT[key] = value
    for build in (build_train_transform, build_test_transform):
        with pytest.raises(ConfigError, match=rf"INPUT.{key}=.* is not valid: expected {expected}"):
            build(cfg)


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 2, 0]), ks=(1, 2, 5)) == [1, 1, 3]


def test_topk_evaluator_is_timms_accuracy_and_the_mean_cross_entropy():
    """Over batches of unequal size, rows labelled IGNORED_LABEL among them: top-1 / top-5
    error = 100 - timm.utils.accuracy's, loss = F.cross_entropy of all kept rows at once."""
    from timm.utils import accuracy

    from resnext_det.classification.evaluator import TopKEvaluator
    from resnext_det.data.classification import IGNORED_LABEL

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 10, generator=generator)
    labels = torch.randint(0, 10, (37,), generator=generator)
    ignored = torch.zeros(37, dtype=torch.bool)
    ignored[[3, 20]] = True
    evaluator = TopKEvaluator()
    evaluator.reset()
    for rows in (slice(0, 5), slice(5, 21), slice(21, 37)):
        batch_labels = torch.where(ignored[rows], IGNORED_LABEL, labels[rows])
        evaluator.process((None, batch_labels), logits[rows])
    result = evaluator.evaluate()
    acc1, acc5 = accuracy(logits[~ignored], labels[~ignored], topk=(1, 5))
    assert 0 < acc1 < acc5 < 100  # both ranks matter on these logits
    assert result["top1_err"] == pytest.approx(100 - float(acc1))
    assert result["top5_err"] == pytest.approx(100 - float(acc5))
    want = torch.nn.functional.cross_entropy(logits[~ignored], labels[~ignored])
    assert result["loss"] == pytest.approx(float(want))
    assert (result["images"], result["skipped"]) == (35, 2)
