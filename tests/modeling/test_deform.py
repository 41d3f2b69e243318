"""The deformable form-(c) block: detectron2's parameters and checkpoints, the plain block
at zero offsets, plain convolutions of shifted inputs at integer offsets, gradients to the
offsets, folding for inference, and a deformable FPN detector that trains and evaluates."""
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import detectron2.layers
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone import resnet as d2_resnet
from torchvision.ops import deform_conv2d

from resnext_det import ConfigError
from resnext_det.checkpoint import ResNeXtCheckpointer, convert_weights, save_converted
from resnext_det.checkpoint.sources.resnext_det import OFFSETS
from resnext_det.data import register_digits
from resnext_det.engine import Trainer, setup_cfg
from resnext_det.modeling import parse_template
from resnext_det.modeling.blocks import GroupedBottleneck
from resnext_det.modeling.deform import DeformConv2d, DeformGroupedBottleneck
from resnext_det.modeling.inference import optimize_for_inference
from resnext_det.utils.testing import detection_error, max_rel_error, randomize_norms_
from tests.helpers import load_tool, make_cfg

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["res2", "res3", "res4", "res5"]
C3_C5 = ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True]]


@pytest.fixture
def d2_deform_ops(monkeypatch):
    """detectron2's DeformConv / ModulatedDeformConv as written in its deform_conv.py.

    Without its compiled _C, detectron2 replaces both classes by placeholders that raise
    when built. Running the file again with a stand-in `detectron2._C` module gives the
    real classes: their constructors need no _C, nor does DeformConv's forward on CPU
    tensors with one deformable group (it calls torchvision's deform_conv2d). detectron2's
    DeformBottleneckBlock and build_resnet_backbone then build with them.
    """
    monkeypatch.setitem(sys.modules, "detectron2._C", types.ModuleType("detectron2._C"))
    path = Path(detectron2.layers.__file__).with_name("deform_conv.py")
    spec = importlib.util.spec_from_file_location("detectron2.layers._deform_conv_as_written", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(d2_resnet, "DeformConv", module.DeformConv)
    monkeypatch.setattr(d2_resnet, "ModulatedDeformConv", module.ModulatedDeformConv)


def _block(modulated=False, groups=1, *, stride=2, dilation=1, plain=False):
    """A deformable (or, plain=True, the plain) block 32 -> 64 with C=4, d=4."""
    kwargs = dict(cardinality=4, bottleneck_width=4, stride=stride, dilation=dilation,
                  norm="FrozenBN")
    if plain:
        return GroupedBottleneck(32, 64, **kwargs)
    return DeformGroupedBottleneck(32, 64, deform_modulated=modulated, deform_num_groups=groups,
                                   **kwargs)


def _random_offsets_(model, seed=0, std=0.05):
    """conv2_offset weights and biases drawn at random: offsets of about a pixel, different
    at every position (zero-initialized ones would hide the offset wiring)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "conv2_offset" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model


def _with(cfg, *overrides):
    cfg = cfg.clone()
    cfg.merge_from_list(list(overrides))
    return cfg


def _named(cfg, backbone):
    return _with(cfg, "MODEL.BACKBONE.NAME", backbone)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- detectron2's layout
@pytest.mark.parametrize("modulated,groups", [(False, 1), (True, 1), (True, 2), (False, 4)])
def test_parameters_are_detectron2s(d2_deform_ops, modulated, groups):
    ours = _block(modulated, groups)
    theirs = d2_resnet.DeformBottleneckBlock(
        32, 64, bottleneck_channels=16, num_groups=4, stride=2, norm="FrozenBN",
        stride_in_1x1=False, deform_modulated=modulated, deform_num_groups=groups)
    assert _shapes(ours) == _shapes(theirs)  # names and shapes, buffers included
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert ours.conv2.groups == theirs.conv2.groups == 4
    assert ours.conv2.deformable_groups == theirs.conv2.deformable_groups == groups
    fresh = _block(modulated, groups)
    assert not fresh.conv2_offset.weight.any() and not fresh.conv2_offset.bias.any()


@pytest.mark.parametrize("res5_dilation", [1, 2])
def test_detectron2_deformable_backbone_loads_and_matches(d2_deform_ops, res5_dilation):
    """detectron2's own deformable ResNeXt (v1 with one deformable group, whose CPU forward
    runs without _C), its offsets made non-zero, loads strictly and gives the same features."""
    cfg = make_cfg("MODEL.RESNETS.NUM_GROUPS", 4, "MODEL.RESNETS.WIDTH_PER_GROUP", 4,
                   "MODEL.RESNETS.OUT_FEATURES", FEATURES, *C3_C5, "MODEL.RESNETS.STRIDE_IN_1X1",
                   False, "MODEL.RESNETS.RES5_DILATION", res5_dilation)
    theirs = build_backbone(_named(cfg, "build_resnet_backbone"), ShapeSpec(channels=3))
    theirs = _random_offsets_(randomize_norms_(theirs)).eval()
    ours = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert type(theirs.res3[0]) is d2_resnet.DeformBottleneckBlock
    assert type(ours.res3[0]) is DeformGroupedBottleneck and type(ours.res2[0]) is GroupedBottleneck
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
        res4 = theirs.res4[0]
        offsets = res4.conv2_offset(F.relu(res4.conv1(theirs.res3(theirs.res2(theirs.stem(x))))))
    assert offsets.abs().mean() > 0.2  # samples really move (by ~0.5 px on average)
    assert max_rel_error(got, expected) < 1e-5


def test_detectron2_dconv_zoo_config_runs_with_our_backbone(d2_deform_ops):
    """detectron2's Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml (made a ResNeXt, 4x8d, on
    both sides) with only MODEL.BACKBONE.NAME changed: detectron2's model's weights load
    strictly into ours and the detections and masks are the same."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    theirs_cfg = get_cfg()
    zoo_file = model_zoo.get_config_file("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml")
    theirs_cfg.merge_from_file(zoo_file)
    theirs_cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.NUM_GROUPS", 4,
        "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.RPN.POST_NMS_TOPK_TEST", 64,
        "TEST.DETECTIONS_PER_IMAGE", 16,
        # narrow heads: the test is about the backbone
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64])
    assert list(theirs_cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == [False, True, True, True]
    torch.manual_seed(0)
    theirs = _random_offsets_(randomize_norms_(build_model(theirs_cfg)), std=0.02).eval()
    ours = build_model(_named(theirs_cfg, "build_resnext_fpn_backbone")).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    inputs = [{"image": torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)) * 255}]
    with torch.no_grad():
        a, b = ours(inputs)[0]["instances"], theirs(inputs)[0]["instances"]
    assert len(b) > 0 and detection_error(a, b) < 1e-4
    union_a, union_b = a.pred_masks.any(0), b.pred_masks.any(0)  # independent of rank order
    assert union_b.any() and (union_a != union_b).float().mean() < 1e-3


def test_detectron2_modulated_checkpoint_loads_through_our_checkpointer(d2_deform_ops, tmp_path):
    """A detectron2-format file of a modulated ResNeXt with 2 deformable groups (detectron2
    cannot run it without _C, but can build and save it) keeps its names and loads strictly."""
    cfg = make_cfg("MODEL.RESNETS.NUM_GROUPS", 4, "MODEL.RESNETS.WIDTH_PER_GROUP", 4,
                   "MODEL.RESNETS.OUT_FEATURES", FEATURES, *C3_C5,
                   "MODEL.RESNETS.DEFORM_MODULATED", True, "MODEL.RESNETS.DEFORM_NUM_GROUPS", 2)
    theirs = _random_offsets_(randomize_norms_(
        build_backbone(_named(cfg, "build_resnet_backbone"), ShapeSpec(channels=3))))
    torch.save({"model": theirs.state_dict()}, tmp_path / "d2_deformable.pth")
    ours = build_backbone(cfg, ShapeSpec(channels=3))
    checkpointer = ResNeXtCheckpointer(ours)
    checkpointer.load(str(tmp_path / "d2_deformable.pth"))
    assert not checkpointer.last_incompatible.missing_keys
    assert not checkpointer.last_incompatible.unexpected_keys
    expected = theirs.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in ours.state_dict().items())
    assert ours.res5[2].conv2_offset.weight.shape == (27 * 2, 128, 3, 3)


def test_plain_weights_start_a_deformable_model(tmp_path, image):
    """ImageNet-style weights have no conv2_offset: it keeps its zero start, not an error,
    and the deformable model then computes the plain one's function."""
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x4d", "MODEL.RESNETS.OUT_FEATURES", FEATURES)
    plain = randomize_norms_(build_backbone(cfg, ShapeSpec(channels=3))).eval()
    torch.save({"model": plain.state_dict()}, tmp_path / "plain.pth")
    deform = build_backbone(_with(cfg, *C3_C5), ShapeSpec(channels=3)).eval()
    checkpointer = ResNeXtCheckpointer(deform)
    checkpointer.load(str(tmp_path / "plain.pth"))
    missing = checkpointer.last_incompatible.missing_keys
    assert missing and all(".conv2_offset." in k for k in missing)
    with torch.no_grad():
        assert max_rel_error(deform(image), plain(image)) < 1e-6


def test_deformable_checkpoint_converts_to_the_plain_resnext(tmp_path):
    """tools/convert_weights.py on a deformable FPN detector's file (detectron2's names,
    modulated, 2 deformable groups): each conv2_offset is dropped by its stated rule, the
    rest is the plain ResNeXt, which a deformable model loads with its offsets at zero."""
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x4d", "MODEL.RESNETS.OUT_FEATURES", FEATURES,
                   *C3_C5, "MODEL.RESNETS.DEFORM_MODULATED", True,
                   "MODEL.RESNETS.DEFORM_NUM_GROUPS", 2)
    trained = _random_offsets_(randomize_norms_(build_backbone(cfg, ShapeSpec(channels=3))))
    state = trained.state_dict()
    torch.save({"model": {f"backbone.bottom_up.{k}": v for k, v in state.items()}},
               tmp_path / "dconv.pth")
    result = convert_weights(str(tmp_path / "dconv.pth"))
    offsets = [k for k in state if ".conv2_offset." in k]
    dropped = dict(result.report.dropped)
    assert len(offsets) == 2 * 13  # the 4 + 6 + 3 blocks of res3..res5
    assert all(dropped[f"backbone.bottom_up.{k}"] == OFFSETS.reason for k in offsets)
    assert set(result.state_dict) == {k for k in state if k not in offsets}
    assert all(torch.equal(v, state[k]) for k, v in result.state_dict.items())
    save_converted(result, tmp_path / "plain.pkl")
    fresh = build_backbone(cfg, ShapeSpec(channels=3))
    checkpointer = ResNeXtCheckpointer(fresh)
    checkpointer.load(str(tmp_path / "plain.pkl"))
    assert sorted(checkpointer.last_incompatible.missing_keys) == sorted(offsets)
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in result.state_dict)
    assert not any(loaded[k].any() for k in offsets)

# ---------------------------------------------------------------- the function computed
@pytest.mark.parametrize("modulated,groups,stride,dilation",
                         [(False, 1, 1, 1), (False, 2, 2, 1), (True, 1, 2, 1), (True, 4, 1, 2)])
def test_zero_offsets_are_the_plain_block(modulated, groups, stride, dilation):
    """At its zero start the block is the plain one; modulated, every sample is weighted
    by sigmoid(0) = 0.5, which is the plain block with half the 3x3 weight."""
    deform = randomize_norms_(_block(modulated, groups, stride=stride, dilation=dilation))
    plain = _block(stride=stride, dilation=dilation, plain=True)
    plain.load_state_dict({k: v for k, v in deform.state_dict().items() if "conv2_offset" not in k})
    if modulated:
        with torch.no_grad():
            plain.conv2.weight.mul_(0.5)
    x = torch.rand(2, 32, 13, 18, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert max_rel_error(deform(x), plain(x)) < 1e-5


def _shifted(x, dy, dx, pad):
    """x zero-padded by `pad` and read (dy, dx) away: out[h, w] = x[h - pad + dy, w - pad + dx],
    zero outside x; size (H + 2 pad, W + 2 pad)."""
    height, width = x.shape[-2:]
    margin = pad + max(abs(dy), abs(dx))
    big = F.pad(x, (margin,) * 4)
    top, left = margin - pad + dy, margin - pad + dx
    return big[..., top:top + height + 2 * pad, left:left + width + 2 * pad]


def _conv_of_shifted_inputs(x, weight, shifts, masks, *, stride, dilation, groups):
    """A 3x3 whose samples at kernel position k move by the integers shifts[g, k] = (dy, dx)
    in deformable group g (a contiguous share of the input channels) and are weighted by
    masks[g, k]: the sum over k of plain convolutions whose kernel is zero but at k,
    each of the input shifted by that position's offsets. No deformable op involved."""
    out = 0
    for k in range(9):
        kernel = torch.zeros_like(weight)
        kernel[..., k // 3, k % 3] = weight[..., k // 3, k % 3]
        parts = [_shifted(part, int(shifts[g, k, 0]), int(shifts[g, k, 1]), dilation)
                 * (1.0 if masks is None else masks[g, k])
                 for g, part in enumerate(x.chunk(shifts.shape[0], dim=1))]
        out = out + F.conv2d(torch.cat(parts, 1), kernel, stride=stride, dilation=dilation,
                             groups=groups)
    return out


@pytest.mark.parametrize("modulated,groups,stride,dilation",
                         [(False, 1, 1, 1), (False, 2, 2, 1), (True, 2, 1, 1), (True, 4, 2, 2)])
def test_integer_offsets_are_convolutions_of_shifted_inputs(modulated, groups, stride, dilation):
    """conv2_offset with zero weight predicts its bias everywhere. A bias laid out as
    detectron2's kernel reads it (group g, position k = 3i + j: dy at 18g + 2k, dx at
    18g + 2k + 1, mask logit at 18G + 9g + k) must make conv2 the shifted-input oracle."""
    gen = torch.Generator().manual_seed(1)
    block = randomize_norms_(_block(modulated, groups, stride=stride, dilation=dilation)).double()
    shifts = torch.randint(-2, 3, (groups, 9, 2), generator=gen).double()
    masks = None
    bias = shifts.flatten()  # (g, k, y/x) in row-major order: 18g + 2k (+ 1)
    if modulated:
        masks = 0.2 + 0.7 * torch.rand(groups, 9, generator=gen, dtype=torch.float64)
        bias = torch.cat([bias, masks.logit().flatten()])  # 18G + 9g + k
    with torch.no_grad():
        block.conv2_offset.bias.copy_(bias)
    seen = {}
    # the block applies ReLU in place to conv2's output: keep copies
    block.conv2.register_forward_hook(lambda m, args, out: seen.update(x=args[0].clone(),
                                                                         out=out.clone()))
    with torch.no_grad():
        block(torch.rand(2, 32, 11, 14, generator=gen, dtype=torch.float64))
        conv2 = block.conv2
        expected = conv2.norm(_conv_of_shifted_inputs(
            seen["x"], conv2.weight, shifts, masks, stride=stride, dilation=dilation,
            groups=conv2.groups))
    assert (shifts[..., 0] != shifts[..., 1]).any()  # y and x told apart
    assert max_rel_error(seen["out"], expected) < 1e-10


@pytest.mark.parametrize("modulated", [False, True])
def test_gradients_reach_the_offsets(modulated):
    """From the zero start (offsets 0, masks 0.5), one backward gives every offset and mask
    channel of conv2_offset a gradient, so training moves the samples."""
    gen = torch.Generator().manual_seed(0)
    block = randomize_norms_(_block(modulated, groups=2))
    x = torch.rand(2, 32, 12, 16, generator=gen)
    out = block(x)
    (out * torch.randn(out.shape, generator=gen)).sum().backward()
    grad_bias = block.conv2_offset.bias.grad
    assert grad_bias.shape == ((27 if modulated else 18) * 2,)
    assert (grad_bias != 0).all()  # offsets (and masks) of both groups, every position
    assert block.conv2_offset.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("modulated", [False, True])
def test_block_scripts(modulated):
    """TorchScript (resnext_det.export's scripting) compiles the block; same outputs."""
    block = _random_offsets_(randomize_norms_(_block(modulated, groups=2))).eval()
    x = torch.rand(2, 32, 12, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(torch.jit.script(block)(x), block(x))


def _lower_precision_inputs(gen):
    """x (2, 8, 9, 11), offsets of about a pixel for 2 deformable groups, masks in (0, 1):
    bfloat16 leaves, as a bfloat16 autocast's convolutions hand them to conv2."""
    x = torch.randn(2, 8, 9, 11, generator=gen)
    offset = torch.randn(2, 2 * 2 * 9, 9, 11, generator=gen)
    mask = torch.rand(2, 2 * 9, 9, 11, generator=gen)
    return [t.bfloat16().requires_grad_(True) for t in (x, offset, mask)]


def test_bfloat16_autocast_runs_torchvisions_op_in_float32():
    """Under CPU bfloat16 autocast (INFERENCE_DTYPE, SOLVER.AMP.ENABLED) conv2 gets bfloat16
    inputs, which torchvision's CPU kernel does not implement. Its value and gradients must
    be torchvision's deform_conv2d in float32 on the same inputs (the rule torchvision's
    own autocast applies on CUDA), handed back in bfloat16."""
    gen = torch.Generator().manual_seed(0)
    conv = DeformConv2d(8, 16, kernel_size=3, padding=1, groups=2, bias=True,
                        deformable_groups=2)
    with torch.no_grad():  # from gen: the global RNG's state depends on the tests run before
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / 6)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    x, offset, mask = _lower_precision_inputs(gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv(x, offset, mask)
    grad = torch.randn(got.shape, generator=gen).bfloat16()
    got_grads = torch.autograd.grad(got, [x, offset, mask, conv.weight, conv.bias], grad)
    leaves = [t.detach().float().requires_grad_(True) for t in (x, offset, mask)]
    expected = deform_conv2d(leaves[0], leaves[1], conv.weight, conv.bias, padding=(1, 1),
                             mask=leaves[2])
    expected_grads = torch.autograd.grad(expected, [*leaves, conv.weight, conv.bias], grad.float())
    assert got.dtype == torch.bfloat16 and expected.abs().max() > 1
    assert max_rel_error(got, expected) < 2 ** -8  # bfloat16's rounding of the float32 value
    for name, a, b in zip(("x", "offset", "mask", "weight", "bias"), got_grads, expected_grads):
        assert a.dtype == (torch.bfloat16 if name in ("x", "offset", "mask") else torch.float32)
        assert max_rel_error(a, b) < 2 ** -8, name


def test_bfloat16_inference_of_a_deformable_detector():
    """MODEL.RESNEXT.INFERENCE_DTYPE bfloat16 on a C4 detector with modulated deformable
    res4 / res5 (its FAST_INFERENCE copy: norms folded into conv2's bias): it detects,
    returns float32, and each deformable 3x3 is torchvision's op in float32 on its inputs."""
    from resnext_det.engine.trainer import inference_model

    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x4d", "MODEL.ROI_HEADS.NAME",
                   "ResNeXtRes5ROIHeads", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                   [False, False, True, True], "MODEL.RESNETS.DEFORM_MODULATED", True,
                   "MODEL.RESNETS.DEFORM_NUM_GROUPS", 2, "MODEL.RESNEXT.INFERENCE_DTYPE",
                   "bfloat16", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                   "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128,
                   "MODEL.RPN.POST_NMS_TOPK_TEST", 64)
    torch.manual_seed(0)
    model = _random_offsets_(randomize_norms_(build_model(cfg)), std=0.02).eval()
    bf16 = inference_model(cfg, model)
    seen = []
    for conv in (bf16.model.backbone.res4[0].conv2, bf16.model.roi_heads.res5[0].conv2):
        conv.register_forward_hook(lambda m, args, out: seen.append((m, args, out.clone())))
    inputs = [{"image": torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)) * 255}]
    with torch.no_grad():
        instances = bf16(inputs)[0]["instances"]
    assert len(instances) > 0 and instances.scores.dtype == torch.float32
    assert len(seen) == 2
    for conv, (x, offset, mask), out in seen:
        assert conv.norm is None and x.dtype == offset.dtype == out.dtype == torch.bfloat16
        expected = deform_conv2d(x.float(), offset.float(), conv.weight, conv.bias,
                                 stride=conv.stride, padding=conv.padding,
                                 dilation=conv.dilation, mask=mask.float())
        assert max_rel_error(out, expected) < 2 ** -8


# ---------------------------------------------------------------- config and builders
@pytest.mark.parametrize("overrides,pattern", [
    (["MODEL.RESNEXT.BLOCK_FORM", "b"],
     r"MODEL.RESNEXT.BLOCK_FORM='b' .*'c' when MODEL.RESNETS.DEFORM_ON_PER_STAGE"),
    (["MODEL.RESNETS.DEFORM_NUM_GROUPS", 3],
     r"DEFORM_NUM_GROUPS=3 .*a divisor of 16 \(res3 bottleneck width"),
    (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [True, True]],
     r"DEFORM_ON_PER_STAGE=\[True, True\] .*4 booleans"),
])
def test_bad_deformable_config(overrides, pattern):
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x4d", *C3_C5, *overrides)
    with pytest.raises(ConfigError, match=pattern):
        build_backbone(cfg, ShapeSpec(channels=3))


def test_optimize_for_inference_folds_the_deformable_norms(image):
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_4x4d", "MODEL.RESNETS.NORM", "BN",
                   "MODEL.RESNETS.OUT_FEATURES", FEATURES, *C3_C5,
                   "MODEL.RESNETS.DEFORM_MODULATED", True, "MODEL.RESNETS.DEFORM_NUM_GROUPS", 2)
    model = _random_offsets_(randomize_norms_(build_backbone(cfg, ShapeSpec(channels=3)))).eval()
    norms = sum(isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules())
    fast = optimize_for_inference(model)
    assert fast.folded_norms == norms  # the deformable 3x3s' norms too
    assert fast.res3[0].conv2.norm is None and fast.res3[0].conv2.bias is not None
    with torch.no_grad():
        assert max_rel_error(fast(image), model(image)) < 1e-5


def test_c4_detector_with_deformable_res4_and_res5_head():
    """C4: res4 in the backbone and res5 in ResNeXtRes5ROIHeads are deformable (detectron2's
    Res5ROIHeads refuses a deformable res5); the folded copy gives the same detections."""
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x4d", "MODEL.ROI_HEADS.NAME",
                   "ResNeXtRes5ROIHeads", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                   [False, False, True, True], "MODEL.RESNETS.DEFORM_MODULATED", True,
                   "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "INPUT.MIN_SIZE_TEST", 96,
                   "INPUT.MAX_SIZE_TEST", 128, "MODEL.RPN.POST_NMS_TOPK_TEST", 64)
    torch.manual_seed(0)
    model = _random_offsets_(randomize_norms_(build_model(cfg)), std=0.02).eval()
    assert type(model.backbone.res4[0]) is DeformGroupedBottleneck
    assert type(model.roi_heads.res5[0]) is DeformGroupedBottleneck
    inputs = [{"image": torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)) * 255}]
    fast_model = optimize_for_inference(model)
    with torch.no_grad():
        eager, fast = model(inputs)[0]["instances"], fast_model(inputs)[0]["instances"]
    assert len(eager) > 0 and detection_error(fast, eager) < 1e-3


# ---------------------------------------------------------------- training
def test_deformable_fpn_trains_then_evaluates(datasets_root, tmp_path):
    """The demo's FPN detector, tiny, with modulated deformable res3..res5: 3 iterations on
    the digits set with finite losses, offsets that moved, then COCO evaluation."""
    register_digits(datasets_root / "digits")
    tiny = ["MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
            "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.FPN.OUT_CHANNELS", "16",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
            "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "0",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
            "MODEL.RESNETS.DEFORM_MODULATED", "True", "MODEL.DEVICE", "cpu",
            "OUTPUT_DIR", str(tmp_path)]
    demo_args = load_tool("demo").demo_args
    cfg = setup_cfg(demo_args(str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml"), tiny),
                    task="train")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [value for value, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    state = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    offsets = [v for k, v in state.items() if k.endswith("conv2_offset.weight")]
    assert len(offsets) == sum(parse_template("X50_2x2d").stage_blocks[1:])  # res3..res5
    assert any(v.abs().sum() > 0 for v in offsets)  # trained away from the zero start
    metrics = json.loads((tmp_path / "inference/digits_val/coco_metrics.json").read_text())
    assert math.isfinite(metrics["bbox"]["AP"])  # evaluated (3 iterations learn nothing)


DCONV_CONFIGS = sorted((ROOT / "configs").glob("*_dconv_*.yaml"))


@pytest.mark.parametrize("path", DCONV_CONFIGS, ids=[p.stem for p in DCONV_CONFIGS])
def test_dconv_config_builds_mmdetections_setting(path):
    """mmdetection's "dconv c3-c5" (its stage_with_dcn=(False, True, True, True), one
    deformable group, no modulation): every block of res3..res5 deformable, res2 plain."""
    cfg = make_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        backbone = build_model(cfg).backbone.bottom_up
    assert all(type(b) is GroupedBottleneck for b in backbone.res2)
    deformable = [b for stage in (backbone.res3, backbone.res4, backbone.res5) for b in stage]
    assert all(type(b) is DeformGroupedBottleneck and not b.deform_modulated
               and b.deform_num_groups == 1 for b in deformable)
    mmdet_name = path.stem.replace("_dconv_FPN_1x", "").replace("X101_32x4d", "x101_32x4d_fpn")
    assert f"configs/dcn/{mmdet_name}_dconv_c3-c5_1x_coco.py" in path.read_text()
    assert "# published: mmdetection configs/dcn/README.md" in path.read_text()
