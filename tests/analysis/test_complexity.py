"""Our classifiers' complexity against the paper's figures, and fvcore's counts (the tool's)."""
import pytest
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis

from resnext_det.analysis import PAPER_FIGURES, complexity, count_complexity
from resnext_det.modeling import TABLE3, parse_template
from resnext_det.modeling.classifier import resnext_classifier
from tests.helpers import load_tool

# Xie et al., CVPR 2017, Table 1 (224x224 input): (parameters in millions, GFLOPs, where
# the paper's FLOPs are multiply-adds of the convolutions and the fc layer).
TABLE1 = {"R50": (25.5, 4.1), "X50_32x4d": (25.0, 4.2)}
# The paper gives one decimal: 4.1 stands for 4.05..4.15, 1.2% either way.
TABLE1_TOLERANCE = 0.01
# Table 3 (and Table 2's C, d pairs): 50-layer settings at ResNet-50's "~4.1 billion FLOPs".
TABLE3_50 = ("1x64d", "2x40d", "4x24d", "8x14d", "32x4d")
TABLE3_GFLOPS, TABLE3_TOLERANCE = 4.1, 0.05  # "~": held to 5%


def _counted(name, size=224):
    """(parameters, multiply-adds of every Conv2d and Linear) of our 1000-class classifier
    on one size x size image, counted here from the layers' shapes as they run."""
    model = resnext_classifier(name, num_classes=1000).eval()
    macs = []

    def conv(module, inputs, output):
        kh, kw = module.kernel_size
        macs.append(output[0].numel() * module.in_channels // module.groups * kh * kw)

    def linear(module, inputs, output):
        macs.append(output[0].numel() * module.in_features)

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(conv)
        elif isinstance(module, torch.nn.Linear):
            module.register_forward_hook(linear)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), sum(macs)


@pytest.mark.parametrize("name", list(TABLE1))
def test_table_1_figures(name):
    params, macs = _counted(name)
    paper_params_m, paper_gflops = TABLE1[name]
    assert params / 1e6 == pytest.approx(paper_params_m, rel=TABLE1_TOLERANCE)
    assert macs / 1e9 == pytest.approx(paper_gflops, rel=TABLE1_TOLERANCE)
    # fvcore's counts, which the tool prints: the same parameters, and the same
    # multiply-adds plus the few (0.5-0.7%) it counts for norms and pooling
    lib_params, lib_macs = count_complexity(name)
    assert lib_params == params
    assert 0 <= lib_macs / macs - 1 < 0.01


@pytest.mark.parametrize("setting", TABLE3_50)
def test_table_3_50_layer_settings_preserve_complexity(setting):
    _, macs = _counted(f"X50_{setting}")
    assert macs / 1e9 == pytest.approx(TABLE3_GFLOPS, rel=TABLE3_TOLERANCE)


def _c_d(setting):
    c, d = setting[:-1].split("x")
    return int(c), int(d)


def test_the_tools_paper_figures_are_the_papers():
    """The figures resnext_det.analysis judges counts by (the tool's verdict) are these."""
    assert [(t.cardinality, t.bottleneck_width) for t in TABLE3 if t.depth == 50] == \
        [_c_d(s) for s in TABLE3_50]
    for name, (params_m, gflops) in TABLE1.items():
        assert (PAPER_FIGURES[name].params_m, PAPER_FIGURES[name].gflops) == (params_m, gflops)
    for template in TABLE3:
        if template.depth == 50 and template.name not in TABLE1:  # 1x64d is ResNet-50: R50
            figure = PAPER_FIGURES[template.name]
            assert (figure.params_m, figure.gflops) == (None, TABLE3_GFLOPS)


@pytest.mark.parametrize("template, gflops_off, params_off, passes", [
    ("R50", 0.015, 0, True),  # Table 1 states R50 exactly: 2%
    ("R50", 0.03, 0, False),
    ("R50", -0.03, 0, False),
    ("X50_32x4d", 0, 0.03, False),  # parameters are held to the same 2%
    ("X50_4x24d", 0.03, 0, True),  # Table 3's "~4.1 G": 5%
    ("X50_4x24d", 0.06, 0, False),
])
def test_exact_figures_use_the_tight_tolerance(template, gflops_off, params_off, passes,
                                               monkeypatch, capsys):
    """The tool's verdict on counts a given fraction off the paper's figure."""
    paper = PAPER_FIGURES[template]

    def counts(t, **kwargs):
        params_m = paper.params_m or 25.0
        return params_m * 1e6 * (1 + params_off), paper.gflops * 1e9 * (1 + gflops_off)

    monkeypatch.setattr(complexity, "count_complexity", counts)
    assert load_tool("analyze_complexity").main(["--templates", template]) == (0 if passes else 1)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(template))
    assert row.split()[-1] == ("yes" if passes else "NO")


def test_counts_equal_torchvision_counts():
    """Our classifier and torchvision's ResNeXt-50 are the same network: same counts."""
    ours = count_complexity(parse_template("X50_32x4d"), size=64)
    tv = torchvision.models.resnext50_32x4d().eval()
    tv_macs = FlopCountAnalysis(tv, torch.zeros(1, 3, 64, 64))
    tv_macs.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert ours == (sum(p.numel() for p in tv.parameters()), tv_macs.total())


def test_stride_in_1x1_counts_fewer_multiply_adds():
    assert count_complexity("X50_32x4d", size=64, stride_in_1x1=True)[1] < \
        count_complexity("X50_32x4d", size=64)[1]


def test_tool_prints_table_and_passes(capsys):
    main = load_tool("analyze_complexity").main
    assert main(["--templates", "R50", "X50_32x4d", "--cardinalities", "3", "32"]) == 0
    out = capsys.readouterr().out
    assert "X50_32x4d" in out and "32x4d" in out and "Table 1" in out


@pytest.mark.parametrize("argv, message", [
    (["--templates", "X50_0x4d"], "'X50_0x4d' is not valid: expected C an integer >= 1"),
    (["--templates", "X50_32x0d"], "expected d an integer >= 1"),
    (["--templates", "R34"], "expected depth one of [50, 101, 152]"),
    (["--templates", "x50_32x4d"], "expected 'R<depth>' or 'X<depth>_<C>x<d>d'"),
    (["--templates", "X50_99999999x4d"], "C x d = 399999996 is over 4096"),  # was a MemoryError
    (["--templates", "X50_1x4096d"], "47.0e9 weights (175 GiB) are over 2e9"),  # dense 3x3s: ~40 GB
    (["--size", "0"], "--size 0: expected 32 (ResNeXt downsamples by 32) to 4096"),
    (["--size", "20000"], "--size 20000: expected 32"),  # was: 4.8 GB asked of the allocator
    (["--templates"], "--templates: expected one or more template names"),  # was: the defaults
    (["--cardinalities", "0"], "--cardinalities [0]: expected integers >= 1"),
    (["--cardinalities"], "--cardinalities []: expected integers >= 1"),  # was: an empty table, exit 0
])
def test_tool_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool("analyze_complexity").main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_tool_does_not_judge_other_sizes_by_the_papers_224_figures(capsys):
    """At 32 px R50 has ~2% of its 224 px multiply-adds: not a failed paper check."""
    assert load_tool("analyze_complexity").main(["--templates", "R50", "--size", "32",
                                                 "--solver-only"]) == 0
    assert load_tool("analyze_complexity").main(["--templates", "R50", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "for 224x224: not compared" in out and " NO" not in out
    assert "%" not in out.split("Classifier at")[1]  # no deviation from a figure it hides
