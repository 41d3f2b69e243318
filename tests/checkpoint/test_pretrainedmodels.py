"""Cadene's pretrainedmodels ResNeXt-101 state dicts, against the package's own forward.

The state dicts are those of pretrainedmodels 0.7.4 models built for real (random
weights, random BN statistics); converted, they must give the package's res2..res5 and
logits on a 224x224 image within float32 rounding, and only with the stride placement
the metadata states.
"""
import pytest
import torch

from reference_models import PM_TEMPLATES, ours_outputs, pretrainedmodels_resnext
from resnext_det.checkpoint import convert_weights
from resnext_det.checkpoint.sources.base import IMAGENET_RGB
from resnext_det.utils.testing import max_rel_error

TOL = 1e-5


@pytest.fixture(scope="module", params=sorted(PM_TEMPLATES))
def converted(request, tmp_path_factory):
    """(name, ConversionResult, image, pretrainedmodels' outputs) per ResNeXt-101."""
    model, image, expected = pretrainedmodels_resnext(request.param)
    path = tmp_path_factory.mktemp("pretrainedmodels") / f"{request.param}.pth"
    torch.save(model.state_dict(), path)
    result = convert_weights(path, keep_fc=True)
    path.unlink()  # hundreds of MB; the converted tensors are in memory
    return request.param, result, image, expected


def test_metadata(converted):
    name, result, _, _ = converted
    meta = result.metadata
    assert (meta.source_format, meta.template, meta.num_classes) == ("pretrainedmodels",
                                                                     PM_TEMPLATES[name], 1000)
    assert meta.input_format == "RGB" and meta.stride_in_1x1 is False
    assert meta.pixel_mean == IMAGENET_RGB["pixel_mean"]  # (0.485, 0.456, 0.406) * 255
    assert meta.pixel_std == IMAGENET_RGB["pixel_std"]  # (0.229, 0.224, 0.225) * 255
    assert {("features.4.0.0.0.0.3.weight", "res2.0.conv2.weight"),
            ("features.4.0.0.0.1.weight", "res2.0.conv3.weight"),
            ("features.5.0.0.1.0.weight", "res3.0.shortcut.weight"),
            ("last_linear.weight", "linear.weight")} <= set(result.report.renames)


def test_stride_in_the_3x3_of_the_package():
    """The fact the metadata rests on: res3.0 (features[5][0]) strides in its grouped 3x3."""
    features = pretrainedmodels_resnext("resnext101_32x4d")[0].features
    inner = features[5][0][0][0][0]  # block, ConcatTable, main, nested Sequential
    assert inner[3].stride == (2, 2) and inner[3].groups == 32 and inner[0].stride == (1, 1)


def test_outputs_match_the_package(converted):
    name, result, image, expected = converted
    got = ours_outputs(PM_TEMPLATES[name], result.state_dict, image, num_classes=1000,
                       stride_in_1x1=result.metadata.stride_in_1x1)
    assert max_rel_error(got, expected) < TOL


def test_wrong_stride_placement_is_caught(converted):
    """Built with the stride in the 1x1, the same weights compute another function."""
    name, result, image, expected = converted
    got = ours_outputs(PM_TEMPLATES[name], result.state_dict, image, num_classes=1000,
                       stride_in_1x1=not result.metadata.stride_in_1x1)
    assert max_rel_error(got, expected) > 1e3 * TOL
