"""Torch7 .t7 files: the ResNeXt release's nested blocks, fb.resnet.torch's flat ones, form (b).

Each .t7 is written from a torch module tree one module to one Lua module
(t7_writer.to_t7), so its structure is that tree's:
  nested  pretrainedmodels' resnext101_32x4d, generated from the released .t7;
  flat    fb.resnet.torch's ResNet-50 layout around torchvision's resnet50 modules;
  form b  resnext.lua's 'resnext_B' (C paths, JoinTable), built as torch modules.
The expected outputs are each tree's own forward (pretrainedmodels', torchvision's, the
form-(b) tree's), never our converter's belief.
"""
import copy

import pytest
import torch
import torchvision

from reference_models import (fb_resnet_tree, form_b_resnext50, ours_outputs,
                              pretrainedmodels_resnext, release_tree, sequential_outputs,
                              torchvision_resnet50)
from resnext_det.checkpoint import ConversionError, convert_weights, sniff_container
from resnext_det.checkpoint.detect import unwrap
from resnext_det.checkpoint.readers import read_weights_file
from resnext_det.checkpoint.sources import SOURCES, pretrainedmodels, torch7
from resnext_det.utils.testing import max_rel_error
import t7_writer
from t7_writer import T7Module, to_t7, write_t7

TOL = 1e-5


def _trees():
    """{case: (torch tree in the Lua layout, image, expected outputs, template, classes)}."""
    pm, pm_image, pm_expected = pretrainedmodels_resnext("resnext101_32x4d")
    tv, tv_image, tv_expected = torchvision_resnet50()
    form_b, b_image, b_expected = form_b_resnext50()
    return {"nested": (release_tree(pm), pm_image, pm_expected, "X101_32x4d", 1000),
            "flat": (fb_resnet_tree(tv), tv_image, tv_expected, "R50", 1000),
            "form_b": (form_b, b_image, b_expected, "X50_2x4d", 10)}


# One source key per case that the fixed-index reading of the past got wrong or that
# pins the layout: the nested release's grouped 3x3 sits one level deeper.
FIRST_3X3 = {"nested": ("4.0.0.0.0.3.weight", "res2.0.conv2.weight"),
             "flat": ("4.0.0.0.3.weight", "res2.0.conv2.weight"),
             "form_b": ("4.0.0.0.0.1.3.weight", "res2.0.paths.1.conv2.weight")}
CONV3 = {"nested": ("4.0.0.0.1.weight", "res2.0.conv3.weight"),
         "flat": ("4.0.0.0.6.weight", "res2.0.conv3.weight"),
         "form_b": ("4.0.0.0.2.weight", "res2.0.conv3.weight")}


@pytest.fixture(scope="module", params=["nested", "flat", "form_b"])
def converted(request, tmp_path_factory):
    """(case, ConversionResult, image, expected, template, classes) of a written .t7."""
    tree, image, expected, template, classes = _trees()[request.param]
    path = write_t7(tmp_path_factory.mktemp("t7") / f"{request.param}.t7", to_t7(tree))
    assert sniff_container(path) == "torch7"
    result = convert_weights(path, keep_fc=True)
    path.unlink()
    return request.param, result, image, expected, template, classes


def test_layout_and_metadata(converted):
    case, result, _, _, template, classes = converted
    meta = result.metadata
    assert (meta.source_format, meta.template, meta.num_classes) == ("torch7", template, classes)
    assert (meta.input_format, meta.stride_in_1x1) == ("RGB", False)
    assert {FIRST_3X3[case], CONV3[case]} <= set(result.report.renames)


def test_outputs_match_the_tree(converted):
    case, result, image, expected, template, classes = converted
    got = ours_outputs(template, result.state_dict, image, num_classes=classes,
                       stride_in_1x1=result.metadata.stride_in_1x1)
    assert max_rel_error(got, expected) < TOL


def test_wrong_stride_placement_is_caught(converted):
    case, result, image, expected, template, classes = converted
    got = ours_outputs(template, result.state_dict, image, num_classes=classes,
                       stride_in_1x1=not result.metadata.stride_in_1x1)
    assert max_rel_error(got, expected) > 1e3 * TOL


# ---------------------------------------------------------------- detection and messages
@pytest.fixture(scope="module")
def t7_state(tmp_path_factory):
    """The flattened {index path: array} of the form-(b) .t7, as the converter reads it."""
    path = write_t7(tmp_path_factory.mktemp("t7") / "form_b.t7", to_t7(form_b_resnext50()[0]))
    container, obj = read_weights_file(path)
    return unwrap(obj, container)[0]


@pytest.fixture(scope="module")
def foreign_states():
    """pretrainedmodels' and torchvision's state dicts (keys only matter here)."""
    return {"pretrainedmodels": pretrainedmodels_resnext("resnext101_32x4d")[0].state_dict(),
            "torchvision": torchvision.models.resnext50_32x4d().state_dict()}


def test_each_naming_is_claimed_by_one_source(t7_state, foreign_states):
    states = dict(foreign_states, torch7=t7_state)
    for name, state in states.items():
        assert [s.name for s in SOURCES if s.matches(state, {})] == [name]


@pytest.mark.parametrize("name, first_key", [("pretrainedmodels", "features.0.weight"),
                                             ("torchvision", "conv1.weight")])
def test_foreign_state_dict_to_torch7_rename(foreign_states, name, first_key):
    with pytest.raises(ConversionError) as err:
        torch7.SOURCE.rename(foreign_states[name])
    message = str(err.value)
    assert f"key {first_key!r} is not a Torch7 module index path" in message
    assert "blocks per stage" not in message


def test_torch7_tree_to_pretrainedmodels_rename(t7_state):
    """Not its naming: every key unknown (None), which the converter lists as unmatched."""
    assert set(pretrainedmodels.SOURCE.rename(t7_state).values()) == {None}


def test_block_that_fits_no_layout_is_named(t7_state, tmp_path):
    """res2.1 without the 1x1 after its JoinTable: the block, what is there, what was expected."""
    state = {k: torch.as_tensor(v) for k, v in t7_state.items() if k != "4.1.0.0.2.weight"}
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ConversionError) as err:
        convert_weights(tmp_path / "broken.pth")
    message = str(err.value)
    assert "Torch7 block 4.1 (res2.1): the main branch has conv at 4.1.0.0.0.0.0" in message
    assert "expected 3 (conv, BN) pairs" in message and "blocks per stage" not in message


def test_missing_stage_is_named(t7_state):
    state = {k: v for k, v in t7_state.items() if not k.startswith("7.")}
    with pytest.raises(ConversionError, match=r"found 3 stages of blocks at top-level indices "
                                              r"\['4', '5', '6'\]; expected 4"):
        torch7.SOURCE.rename(state)


def test_a_file_cut_inside_its_last_tensor_is_unreadable(tmp_path):
    """torchfile reads a storage with numpy.fromfile, which returns what is left at the end
    of a cut file without a word; the tensor over it then read memory past the storage."""
    from resnext_det.checkpoint import UnreadableFileError

    torch.manual_seed(0)
    path = write_t7(tmp_path / "whole.t7", to_t7(torch.nn.Sequential(torch.nn.Linear(8, 16))))
    data = path.read_bytes()
    assert read_weights_file(path)[0] == "torch7"
    for cut in (4, 12, 60):  # inside the last storage (the bias, 16 floats = 64 bytes)
        (tmp_path / "cut.t7").write_bytes(data[:-cut])
        with pytest.raises(UnreadableFileError, match=r"cut\.t7: a truncated Torch7 file"):
            read_weights_file(tmp_path / "cut.t7")


def test_a_class_name_that_is_not_utf8_is_a_conversion_error(tmp_path):
    """A damaged class name: a bare UnicodeDecodeError, raised after torchfile's read."""
    from resnext_det.checkpoint import ConversionError

    torch.manual_seed(0)
    tree = to_t7(torch.nn.Sequential(torch.nn.Linear(8, 16)))
    tree.fields["modules"][0].name = b"nn.Lin\xe9ar"
    with pytest.raises(ConversionError, match="damaged.t7: holds no weights .* Torch7 tree"):
        convert_weights(write_t7(tmp_path / "damaged.t7", tree))


def _form_b_copy():
    """form_b_resnext50's tree (a copy: the cached one is shared by the other tests), image."""
    tree, image, _ = form_b_resnext50()
    return copy.deepcopy(tree), image


def _assert_converts_to_the_trees_outputs(tree, image, path):
    """`tree` written to `path`, converted: our model computes the tree's own outputs."""
    with torch.no_grad():
        expected, logits = sequential_outputs(tree, image)
    expected["linear"] = logits
    result = convert_weights(write_t7(path, to_t7(tree)), keep_fc=True)
    got = ours_outputs("X50_2x4d", result.state_dict, image, num_classes=10,
                       stride_in_1x1=result.metadata.stride_in_1x1)
    assert max_rel_error(got, expected) < TOL


def test_the_files_bn_eps_is_used(tmp_path):
    """A tree whose BNs normalize with eps 1e-3 (not torch's 1e-5): converted, our model
    computes that tree's outputs (the eps is folded into running_var)."""
    tree, image = _form_b_copy()
    for m in tree.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3
            m.running_var.uniform_(1e-3, 3e-3)  # var near eps: the eps matters
    _assert_converts_to_the_trees_outputs(tree, image, tmp_path / "eps.t7")


class _OldNNBatchNorm(torch.nn.BatchNorm2d):
    """nn.SpatialBatchNormalization before torch/nn moved to running_var (2016): it kept
    running_std, a running average of 1 / sqrt(var + eps), and normalized with it at test
    time: y = (x - running_mean) * running_std * weight + bias."""

    def forward(self, x):
        scale = (self.running_std * self.weight).view(1, -1, 1, 1)
        return (x - self.running_mean.view(1, -1, 1, 1)) * scale + self.bias.view(1, -1, 1, 1)


def _old_nn_batch_norm(m):
    return T7Module("nn.SpatialBatchNormalization", weight=m.weight, bias=m.bias,
                    running_mean=m.running_mean, running_std=m.running_std, eps=m.eps,
                    momentum=m.momentum, affine=m.affine)


def test_an_old_nn_running_std_is_read(tmp_path, monkeypatch):
    """Files of old nn have running_std and no running_var: converted, our model computes the
    outputs of that tree (its test-time formula, above)."""
    monkeypatch.setitem(t7_writer._LUA, "_OldNNBatchNorm", _old_nn_batch_norm)
    tree, image = _form_b_copy()
    for parent in list(tree.modules()):
        for name, child in parent.named_children():
            if type(child) is torch.nn.BatchNorm2d:
                old = _OldNNBatchNorm(child.num_features).eval()
                old.load_state_dict(child.state_dict())
                old.register_buffer("running_std", torch.rand(child.num_features) + 0.5)
                setattr(parent, name, old)
    _assert_converts_to_the_trees_outputs(tree, image, tmp_path / "old_nn.t7")


@pytest.mark.parametrize("bias, fails", [(1e-3, True), (0.0, False)])
def test_a_convolution_bias_is_refused_unless_zero(tmp_path, bias, fails):
    """Our convolutions have no bias: a non-zero one would be dropped (outputs shifted)."""
    tree, _ = _form_b_copy()
    stem = tree[0]
    tree[0] = torch.nn.Conv2d(stem.in_channels, stem.out_channels, stem.kernel_size,
                              stem.stride, stem.padding, bias=True)
    with torch.no_grad():
        tree[0].weight.copy_(stem.weight)
        tree[0].bias.fill_(bias)
    path = write_t7(tmp_path / "bias.t7", to_t7(tree))
    if fails:
        with pytest.raises(ConversionError, match=r"^0\.bias: non-zero convolution bias"):
            convert_weights(path)
    else:
        assert convert_weights(path).metadata.template == "X50_2x4d"
