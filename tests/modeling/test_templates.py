import pytest
import torchvision

from resnext_det import ConfigError, parse_template, resnext_classifier
from resnext_det.modeling.templates import (
    TABLE3,
    Template,
    bottleneck_params,
    complexity_preserving_width,
)


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [
    ("R50", (50, 1, 64)), ("X50_32x4d", (50, 32, 4)), ("X101_64x4d", (101, 64, 4)),
    ("R152", (152, 1, 64)), ("X152_32x4d", (152, 32, 4)),
])
def test_parse_template(name, expected):
    t = parse_template(name)
    assert (t.depth, t.cardinality, t.bottleneck_width) == expected
    assert parse_template(t.name) == t


@pytest.mark.parametrize("name", ["X50", "X50_32x", "resnext50", "X50_32x4"])
def test_bad_template_name_says_the_format(name):
    with pytest.raises(ConfigError, match="MODEL.RESNEXT.TEMPLATE.*X<depth>_<C>x<d>d"):
        parse_template(name)


def test_paper_table2_widths():
    # The paper's Table 2: same-complexity settings of ResNet-50's res2 block.
    assert {c: complexity_preserving_width(c) for c in (1, 2, 4, 8, 32)} == {
        1: 64, 2: 40, 4: 24, 8: 14, 32: 4}
    assert [t.name for t in TABLE3[:5]] == ["R50", "X50_2x40d", "X50_4x24d", "X50_8x14d", "X50_32x4d"]


@pytest.mark.parametrize("cardinality", [3, 5, 16, 48, 64, 100])
def test_width_solver_is_the_closest_width(cardinality):
    d = complexity_preserving_width(cardinality)
    target = bottleneck_params(1, 64)
    gap = abs(bottleneck_params(cardinality, d) - target)
    neighbours = [w for w in (d - 1, d + 1) if w >= 1]
    assert all(gap <= abs(bottleneck_params(cardinality, w) - target) for w in neighbours)


def test_resnet50_is_1x64d_with_torchvision_parameter_count():
    assert _params(resnext_classifier("X50_1x64d")) == _params(torchvision.models.resnet50())


def test_resnext50_32x4d_has_torchvision_parameter_count():
    assert _params(resnext_classifier("X50_32x4d")) == _params(torchvision.models.resnext50_32x4d())


def test_template_rules_width_doubles_per_stage():
    net = resnext_classifier(Template(50, 8, 3))
    for k, stage in enumerate(["res2", "res3", "res4", "res5"]):
        block = getattr(net, stage)[0]
        assert block.conv2.groups == 8
        assert block.conv2.out_channels == 8 * 3 * 2**k
        assert block.conv3.out_channels == 256 * 2**k
        assert len(getattr(net, stage)) == (3, 4, 6, 3)[k]


@pytest.mark.parametrize("ours, theirs", [
    ("R101", "resnet101"), ("R152", "resnet152"), ("X101_32x8d", "resnext101_32x8d"),
    ("X101_64x4d", "resnext101_64x4d")])
def test_deeper_templates_have_torchvisions_blocks_and_parameter_counts(ours, theirs):
    """Blocks per stage (STAGE_BLOCKS) and parameters, against torchvision's own models
    (built on the meta device: shapes only)."""
    import torch

    with torch.device("meta"):
        model, reference = resnext_classifier(ours), getattr(torchvision.models, theirs)()
    assert [len(getattr(model, f"res{k}")) for k in range(2, 6)] == [
        len(getattr(reference, f"layer{k}")) for k in range(1, 5)]
    assert _params(model) == _params(reference)
