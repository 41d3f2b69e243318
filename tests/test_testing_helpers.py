"""The comparators of resnext_det.utils.testing, which decide the equivalence tests
(export, deform, train fold, block forms, inference dtype): each must notice what it
exists to notice, and pass what is equal.

The errors expected here are worked out by hand from the documented definitions
(|diff| / max |expected|), on numbers chosen so the arithmetic is exact or nearly so.
"""
import copy
import math

import pytest
import torch
import torchvision
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.structures import Boxes, Instances

from resnext_det.modeling import build_resnext, parse_template
from resnext_det.modeling.blocks import (
    ConcatPathsBottleneck,
    GroupedBottleneck,
    SummedPathsBottleneck,
)
from resnext_det.utils.testing import detection_error, max_rel_error, randomize_norms_

# The thresholds the equivalence tests use: a real difference must be far above them.
LOOSEST_DETECTION_TOL = 1e-3
LOOSEST_TENSOR_TOL = 1e-4

# ---------------------------------------------------------------------------------------
# detection_error
# ---------------------------------------------------------------------------------------

BOXES = [[10.0, 20.0, 50.0, 60.0], [30.0, 5.0, 90.0, 45.0], [0.0, 0.0, 25.0, 80.0]]
SCORES = [0.9, 0.6, 0.3]
CLASSES = [1, 1, 4]
MAX_CORNER = 90.0  # max |box corner| of BOXES
MAX_SCORE = 0.9


def _instances(boxes=BOXES, scores=SCORES, classes=CLASSES):
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def _edited(**changes):
    fields = {"boxes": copy.deepcopy(BOXES), "scores": list(SCORES), "classes": list(CLASSES)}
    for name, (index, value) in changes.items():
        fields[name][index] = value
    return _instances(**fields)


def test_detection_error_is_zero_for_equal_detections():
    assert detection_error(_instances(), _instances()) == 0.0
    empty = _instances([], [], [])
    assert detection_error(empty, _instances([], [], [])) == 0.0


def test_detection_error_matches_as_sets_not_by_rank():
    order = [2, 0, 1]
    permuted = _instances([BOXES[i] for i in order], [SCORES[i] for i in order],
                          [CLASSES[i] for i in order])
    assert detection_error(permuted, _instances()) == 0.0
    assert detection_error(_instances(), permuted) == 0.0


def test_detection_error_passes_float_rounding():
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * 1e-5
    boxes = (torch.tensor(BOXES) + noise).tolist()
    got = _instances(boxes, [s * (1 + 1e-6) for s in SCORES])
    err = detection_error(got, _instances())
    assert 0 < err < 1e-5


@pytest.mark.parametrize("shift", [1.0, 0.5, -2.0])
def test_detection_error_sees_a_shifted_box(shift):
    box = list(BOXES[1])
    box[0] += shift
    got = _edited(boxes=(1, box))
    err = detection_error(got, _instances())
    assert err == pytest.approx(abs(shift) / MAX_CORNER, rel=1e-6)
    assert err > 5 * LOOSEST_DETECTION_TOL
    assert detection_error(_instances(), got) > 5 * LOOSEST_DETECTION_TOL


@pytest.mark.parametrize("delta", [0.05, -0.01])
def test_detection_error_sees_a_changed_score(delta):
    got = _edited(scores=(2, SCORES[2] + delta))
    err = detection_error(got, _instances())
    assert err == pytest.approx(abs(delta) / MAX_SCORE, rel=1e-5)
    assert err > 10 * LOOSEST_DETECTION_TOL


def test_detection_error_sees_a_changed_class():
    # to a class no other detection has: no counterpart at all
    assert detection_error(_edited(classes=(0, 7)), _instances()) == math.inf
    # to the class of another detection (whose box is far away): a large error, not 0
    err = detection_error(_edited(classes=(2, 1)), _instances())
    assert err > 0.1
    # two detections swap classes (same class set, same count)
    swapped = _edited(classes=(1, 4))
    swapped.pred_classes[2] = 1
    assert detection_error(swapped, _instances()) > 0.1


def test_detection_error_sees_a_dropped_or_added_detection():
    dropped = _instances(BOXES[:2], SCORES[:2], CLASSES[:2])
    assert detection_error(dropped, _instances()) == math.inf
    assert detection_error(_instances(), dropped) == math.inf
    added = _instances(BOXES + [[5.0, 5.0, 15.0, 15.0]], SCORES + [0.2], CLASSES + [4])
    assert detection_error(added, _instances()) == math.inf
    assert detection_error(_instances([], [], []), _instances()) == math.inf


def test_detection_error_matches_both_ways():
    # Same count, but detection 1 replaced by a copy of detection 0: every detection of
    # `got` has an exact counterpart, while expected's detection 1 has none close.
    got = _edited(boxes=(1, list(BOXES[0])), scores=(1, SCORES[0]))
    assert detection_error(got, _instances()) > 0.1
    assert detection_error(_instances(), got) > 0.1


# ---------------------------------------------------------------------------------------
# max_rel_error
# ---------------------------------------------------------------------------------------

def _tensor(seed=0, shape=(3, 5, 7)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_max_rel_error_is_zero_for_equal_tensors():
    x = _tensor()
    assert max_rel_error(x.clone(), x) == 0.0
    assert max_rel_error(x.double(), x) == 0.0


def test_max_rel_error_refuses_tensors_of_other_shapes():
    """Broadcasting compared a (1, C) tensor with each row of a (N, C) one: 0 for a got that
    held one row of N."""
    x = _tensor()
    with pytest.raises(ValueError, match="shapes differ"):
        max_rel_error(x[:1], x[:1].expand(3, 5, 7).clone())  # each row equals got


@pytest.mark.parametrize("index", [(0, 0, 0), (2, 4, 6), (0, 1, 2)])
def test_max_rel_error_sees_one_changed_element(index):
    expected = _tensor().clamp(-3, 3)
    expected[0, 1, 2] = -4.0  # max |expected| = 4
    got = expected.clone()
    got[index] += 0.02
    assert max_rel_error(got, expected) == pytest.approx(0.02 / 4.0, rel=1e-5)
    assert max_rel_error(got, expected) > 10 * LOOSEST_TENSOR_TOL


def test_max_rel_error_scales_by_the_expected_tensor():
    expected = _tensor() * 1000
    got = expected + 1.0
    assert max_rel_error(got, expected) == pytest.approx(
        1.0 / float(expected.abs().max()), rel=1e-5)
    # a float32 rounding-sized change stays under the tightest tolerance used
    assert max_rel_error(expected * (1 + 1e-7), expected) < 1e-6


def test_max_rel_error_of_dicts_takes_the_worst_key():
    expected = {"a": _tensor(1), "b": _tensor(2)}
    got = {k: v.clone() for k, v in expected.items()}
    got["extra"] = torch.zeros(1)  # `got` may hold more keys
    assert max_rel_error(got, expected) == 0.0
    got["b"][1, 1, 1] += 0.5
    want = 0.5 / float(expected["b"].abs().max())
    assert max_rel_error(got, expected) == pytest.approx(want, rel=1e-5)
    with pytest.raises(KeyError):
        max_rel_error({"a": expected["a"]}, expected)


def test_max_rel_error_of_an_all_zero_expectation_is_not_small():
    zeros = torch.zeros(4)
    assert max_rel_error(zeros, zeros) == 0.0
    assert max_rel_error(torch.full((4,), 1e-6), zeros) > 1e5


def test_max_rel_error_sees_nan():
    got = _tensor()
    got[0, 0, 0] = float("nan")
    err = max_rel_error(got, _tensor())
    assert not err < LOOSEST_TENSOR_TOL  # NaN compares false: a test `err < tol` fails


# ---------------------------------------------------------------------------------------
# randomize_norms_
# ---------------------------------------------------------------------------------------

DEFAULTS = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


class _Net(torch.nn.Module):
    """One of each norm randomize_norms_ documents, plus a conv it must leave alone."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.frozen = FrozenBatchNorm2d(8)
        self.sync = torch.nn.SyncBatchNorm(8)
        self.naive_sync = NaiveSyncBatchNorm(8)
        self.gn = torch.nn.GroupNorm(2, 8)


def _norm_tensors(module):
    """{(module name, tensor name): tensor} of every norm statistic and affine term."""
    out = {}
    for mod_name, mod in module.named_modules():
        if isinstance(mod, (FrozenBatchNorm2d, torch.nn.modules.batchnorm._NormBase,
                            torch.nn.GroupNorm)):
            for name in DEFAULTS:
                t = getattr(mod, name, None)
                if isinstance(t, torch.Tensor):
                    out[(mod_name, name)] = t
    return out


def test_randomize_norms_changes_every_norm_tensor():
    net = _Net()
    conv_before = net.conv.weight.detach().clone()
    assert randomize_norms_(net) is net
    tensors = _norm_tensors(net)
    assert {m for m, _ in tensors} == {"bn", "frozen", "sync", "naive_sync", "gn"}
    assert len(tensors) == 4 * 4 + 2  # GroupNorm has no statistics
    for (mod_name, name), t in tensors.items():
        # every channel moved off its default, and the channels differ from each other
        assert (t - DEFAULTS[name]).abs().min() > 1e-6, (mod_name, name)
        assert t.std() > 0.01, (mod_name, name)
        low, high = (0.5, 1.5) if name in ("weight", "running_var") else (-0.1, 0.1)
        assert low <= t.min() and t.max() <= high, (mod_name, name)
    assert torch.equal(net.conv.weight, conv_before)


def test_randomize_norms_changes_what_the_norms_compute():
    net = _Net().eval()
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = {n: getattr(net, n)(x) for n in ("bn", "frozen", "gn")}
        randomize_norms_(net)
        for name, out in before.items():
            diff = (getattr(net, name)(x) - out).abs().max()
            assert diff > 0.05, name


def test_randomize_norms_is_seeded_and_keeps_the_mode():
    a = randomize_norms_(_Net().train(), seed=5)
    b = randomize_norms_(_Net().eval(), seed=5)
    c = randomize_norms_(_Net(), seed=6)
    assert a.training and not b.training and not b.bn.training
    ta, tb, tc = _norm_tensors(a), _norm_tensors(b), _norm_tensors(c)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert all(not torch.equal(ta[k], tc[k]) for k in ta)


def _last_norms_of_ours(net):
    """The norm before each block's shortcut add, found from the block forms' structure."""
    last = []
    for block in net.modules():
        if isinstance(block, SummedPathsBottleneck):
            last.append(block.conv3_norm)
        elif isinstance(block, (GroupedBottleneck, ConcatPathsBottleneck)):
            last.append(block.conv3.norm)
    return last


def _last_norms_of_torchvision(net):
    return [m.bn3 for m in net.modules() if isinstance(m, torchvision.models.resnet.Bottleneck)]


@pytest.mark.parametrize("form", ["a", "b", "c"])
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_randomize_norms_gives_each_residual_path_a_small_last_scale(form, norm):
    # X50: 3 + 4 + 6 + 3 = 16 blocks (the paper's Table 1)
    net = build_resnext(parse_template("X50_2x2d"), block_form=form, norm=norm,
                        out_features=["res5"])
    _check_small_last_scales(randomize_norms_(net), _last_norms_of_ours(net), blocks=16)


def test_randomize_norms_gives_torchvision_residual_paths_a_small_last_scale():
    net = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 2, 1, 1],
                                           groups=2, width_per_group=4)
    _check_small_last_scales(randomize_norms_(net), _last_norms_of_torchvision(net), blocks=5)


def _check_small_last_scales(net, last_norms, blocks):
    assert len(last_norms) == blocks
    last_ids = {id(m) for m in last_norms}
    for m in last_norms:
        assert 0.05 <= m.weight.min() and m.weight.max() <= 0.15
    others = [m for m in net.modules() if isinstance(m, (
        FrozenBatchNorm2d, torch.nn.modules.batchnorm._NormBase)) and id(m) not in last_ids]
    assert others
    for m in others:
        assert m.weight.min() >= 0.5
