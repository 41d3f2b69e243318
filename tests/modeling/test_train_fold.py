"""Training with frozen norms folded (MODEL.RESNEXT.FAST_TRAINING): detectron2's losses,
gradients and parameter names, step for step."""
import copy

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage

import resnext_det
from resnext_det.config.checks import check_resnext_keys
from resnext_det.engine import Trainer
from resnext_det.modeling.inference import optimize_for_inference
from resnext_det.modeling.train_fold import FrozenNormConv2d, prepare_for_training
from resnext_det.utils.testing import max_rel_error, randomize_norms_

# A small ResNeXt-50 (blocks 3, 4, 6, 3; C=4, d=2) in detectron2's own FPN config.
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.NUM_GROUPS", 4,
         "MODEL.RESNETS.WIDTH_PER_GROUP", 2, "MODEL.RESNETS.STRIDE_IN_1X1", False,
         "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
         "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64]
ITERATIONS = 5


DETECTION = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
KEYPOINTS = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"


def _zoo_cfg(zoo=DETECTION):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo))
    cfg.merge_from_list(SMALL)
    if cfg.MODEL.KEYPOINT_ON:  # 2 convolutions of 16 channels, not 8 of 512
        cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = (16, 16)
    return cfg


def _detectors(mode, zoo=DETECTION):
    """(ours built by our Trainer with FAST_TRAINING `mode`, detectron2's built-in), one set
    of weights with random FrozenBN statistics, in training mode."""
    theirs_cfg = _zoo_cfg(zoo)
    torch.manual_seed(0)
    theirs = randomize_norms_(build_model(theirs_cfg)).train()
    ours_cfg = resnext_det.add_resnext_config(theirs_cfg.clone())
    ours_cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnext_fpn_backbone",
                              "MODEL.RESNEXT.FAST_TRAINING", mode])
    ours = Trainer.build_model(ours_cfg).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _batch(keypoints=0):
    """Two 64x96 images with two boxes each (with `keypoints`: persons, class 0 of 1, with
    that many visible keypoints in each box)."""
    gen = torch.Generator().manual_seed(0)
    batch = []
    for boxes in ([[4., 6., 40., 50.], [50., 10., 90., 60.]],
                  [[10., 10., 30., 30.], [20., 5., 80., 55.]]):
        boxes = torch.tensor(boxes)
        classes = torch.tensor([0, 0] if keypoints else [3, 17])
        instances = Instances((64, 96), gt_boxes=Boxes(boxes), gt_classes=classes)
        if keypoints:
            xy = boxes[:, None, :2] + torch.rand(2, keypoints, 2, generator=gen) * (
                boxes[:, None, 2:] - boxes[:, None, :2])
            instances.gt_keypoints = Keypoints(torch.cat([xy, torch.full_like(xy[..., :1], 2)], 2))
        batch.append({"image": torch.rand(3, 64, 96, generator=gen) * 255, "instances": instances})
    return batch


def _train(model, iterations=ITERATIONS, keypoints=0):
    """SGD with momentum on one batch; the losses of each iteration (RPN and ROI sampling
    seeded alike for every model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0005, momentum=0.9)
    history = []
    with EventStorage():
        for it in range(iterations):
            torch.manual_seed(it)
            losses = model(_batch(keypoints))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            history.append({k: v.detach() for k, v in losses.items()})
    return history


@pytest.mark.parametrize("mode", ["fold", "fold+nhwc"])
def test_five_iterations_match_detectron2(mode):
    ours, theirs = _detectors(mode)
    start = theirs.backbone.bottom_up.res3[0].conv1.weight.detach().clone()
    assert ours.folded_norms == sum(isinstance(m, FrozenNormConv2d) for m in ours.modules()) > 50
    for it, (mine, reference) in enumerate(zip(_train(ours), _train(theirs))):
        assert mine.keys() == reference.keys()
        for name in reference:
            assert max_rel_error(mine[name], reference[name]) < 1e-4, (it, name)
    theirs_weights = theirs.state_dict()
    for name, value in ours.state_dict().items():
        assert max_rel_error(value, theirs_weights[name]) < 1e-4, name
    moved = max_rel_error(theirs_weights["backbone.bottom_up.res3.0.conv1.weight"], start)
    assert moved > 1e-3, moved  # the comparison above is of trained weights


@pytest.mark.parametrize("mode", ["fold", "fold+nhwc"])
def test_keypoint_training_matches_detectron2(mode):
    """detectron2's keypoint loss views the head's logits as (N x K, H x W): a head in
    channels_last stopped the first iteration of "fold+nhwc" ("auto" on AVX-512 CPUs) with a
    RuntimeError."""
    ours, theirs = _detectors(mode, KEYPOINTS)
    count = theirs.roi_heads.keypoint_head.score_lowres.out_channels  # NUM_KEYPOINTS, 17
    for it, (mine, reference) in enumerate(zip(_train(ours, 2, count), _train(theirs, 2, count))):
        assert mine.keys() == reference.keys() and "loss_keypoint" in mine
        for name in reference:
            assert max_rel_error(mine[name], reference[name]) < 1e-4, (it, name)


def _conv_and_norm(groups=1, bias=False):
    conv = Conv2d(8, 16, kernel_size=3, padding=1, groups=groups, bias=bias,
                  norm=FrozenBatchNorm2d(16))
    randomize_norms_(conv)
    return conv


@pytest.mark.parametrize("groups,bias", [(1, False), (4, False), (1, True)])
def test_weight_gradient_is_the_unfolded_one(groups, bias):
    torch.manual_seed(0)
    plain = _conv_and_norm(groups, bias)
    folded = prepare_for_training(copy.deepcopy(plain), "fold")
    assert type(folded) is FrozenNormConv2d and folded.folded_norms == 1
    x = torch.randn(2, 8, 10, 12)
    grads = []
    for conv in (plain, folded):
        xi = x.clone().requires_grad_(True)
        out = conv(xi)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append([out, conv.weight.grad, xi.grad] + ([conv.bias.grad] if bias else []))
    for got, expected in zip(grads[1], grads[0]):
        assert max_rel_error(got, expected) < 1e-5


def test_names_and_values_unchanged_and_stock_detectron2_loads_them():
    theirs = randomize_norms_(build_model(_zoo_cfg()))
    before = {k: v.clone() for k, v in theirs.state_dict().items()}
    ours = prepare_for_training(copy.deepcopy(theirs), "fold+nhwc")
    after = ours.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert ours.backbone.bottom_up.res3[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    build_model(_zoo_cfg()).load_state_dict(after, strict=True)  # a stock detectron2 model


def test_trainable_norms_and_subclasses_are_left_alone():
    cfg = _zoo_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", 0])
    model = prepare_for_training(build_model(cfg), "fold")
    assert model.folded_norms == 0  # BN computes batch statistics: nothing to fold

    class MyConv(Conv2d):
        pass

    conv = MyConv(4, 4, 1, norm=FrozenBatchNorm2d(4))
    assert prepare_for_training(conv, "fold").folded_norms == 0 and type(conv) is MyConv


def test_inference_copy_of_a_folded_model_is_unchanged():
    """optimize_for_inference folds a FrozenNormConv2d's norm away; its output stays."""
    theirs = randomize_norms_(build_model(_zoo_cfg())).eval()
    ours = prepare_for_training(copy.deepcopy(theirs), "fold+nhwc").eval()
    fast = optimize_for_inference(ours)
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        expected = theirs.backbone(x)
        for model in (ours, fast):
            assert max_rel_error(model.backbone(x), expected) < 1e-5


@pytest.mark.parametrize("capability,device,expected", [
    ("AVX512", "cpu", "fold+nhwc"), ("AVX2", "cpu", "fold"), ("DEFAULT", "cpu", "fold"),
    ("AVX512", "cuda", "fold")])
def test_auto_picks_the_mode_by_cpu_capability_and_device(monkeypatch, caplog, capability,
                                                          device, expected):
    """FAST_TRAINING "auto", the default: "fold+nhwc" on AVX-512 CPUs, "fold" elsewhere,
    the one applied logged. The CPU capability is monkeypatched: this checks the choice
    (the rule written in prepare_for_training), not that the mode chosen is faster here."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert resnext_det.add_resnext_config(get_cfg()).MODEL.RESNEXT.FAST_TRAINING == "auto"
    model = randomize_norms_(build_model(_zoo_cfg()))
    with caplog.at_level("INFO", logger="resnext_det"):
        prepare_for_training(model, "auto", device)
    assert model.training_mode == expected and model.folded_norms > 50
    nhwc = model.backbone.bottom_up.res3[0].conv2.weight.is_contiguous(
        memory_format=torch.channels_last)
    assert nhwc == (expected == "fold+nhwc")
    said = f"'auto': training as {expected!r} on {device} (CPU capability {capability})"
    assert said in caplog.text


def test_unknown_mode_is_a_config_error():
    cfg = resnext_det.add_resnext_config(_zoo_cfg())
    cfg.MODEL.RESNEXT.FAST_TRAINING = "fuse"
    for check in (check_resnext_keys, Trainer.build_model):  # at start, and where it is read
        with pytest.raises(resnext_det.ConfigError, match=r"FAST_TRAINING='fuse' .*'fold\+nhwc'"):
            check(cfg)


def test_trainer_built_model_scripts():
    """A model built with FAST_TRAINING compiles with torch.jit.script (as detectron2's
    scripting export does it) and gives the eager detections."""
    from detectron2.export import scripting_with_instances

    from resnext_det.export.export import SCRIPTING_FIELDS
    ours, _ = _detectors("fold")
    assert isinstance(ours.backbone.bottom_up.res3[0].conv2, FrozenNormConv2d)
    ours.eval()
    scripted = scripting_with_instances(copy.deepcopy(ours), SCRIPTING_FIELDS)
    inputs = [{"image": b["image"]} for b in _batch()]
    with torch.no_grad():
        expected = ours.backbone(torch.stack([x["image"] for x in inputs]))
        got = scripted.backbone(torch.stack([x["image"] for x in inputs]))
    assert max_rel_error(got, expected) < 1e-5  # float rounding (the JIT may reorder ops)
