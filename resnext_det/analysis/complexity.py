"""Parameters and multiply-adds of the ResNeXt classifier, next to the paper's figures.

The paper's "FLOPs" are multiply-adds, which is what fvcore's FlopCountAnalysis counts
for convolutions and linear layers. Its ImageNet models put the stride in the 3x3
(fb.resnet.torch), so that is the default here; stride in the 1x1 runs the 3x3 of each
downsampling block on a 4x smaller map and counts fewer multiply-adds.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from fvcore.nn import FlopCountAnalysis

from ..modeling.classifier import resnext_classifier
from ..modeling.templates import TABLE3, TABLE4, parse_template


@dataclass(frozen=True)
class PaperFigure:
    """A complexity figure from the paper and how closely we must reproduce it."""

    gflops: float
    params_m: Optional[float]  # None where the paper gives no parameter count
    tolerance: float  # relative; 0.02 for figures stated exactly, 0.05 for "~" targets
    source: str


def _preserved(templates, gflops, source):
    return {t.name: PaperFigure(gflops, None, 0.05, source) for t in templates}


# Table 1 states ResNet-50 and ResNeXt-50 (32x4d) exactly; Tables 3 and 4 hold complexity
# at ResNet-50's (~4.1 G), ResNet-101's (~7.8 G) and twice ResNet-101's (~15.6 G).
PAPER_FIGURES = {
    **_preserved([t for t in TABLE3 if t.depth == 50], 4.1, "Table 3: ~R50 complexity"),
    **_preserved([t for t in TABLE3 if t.depth == 101], 7.8, "Table 3: ~R101 complexity"),
    **_preserved(TABLE4, 15.6, "Table 4: ~2x R101 complexity"),
    "R50": PaperFigure(4.1, 25.5, 0.02, "Table 1"),
    "X50_32x4d": PaperFigure(4.2, 25.0, 0.02, "Table 1"),
}


def count_complexity(template, *, size=224, num_classes=1000, stride_in_1x1=False):
    """(parameters, multiply-adds) of the classifier for one size x size image."""
    if isinstance(template, str):
        template = parse_template(template)
    model = resnext_classifier(template, num_classes=num_classes, stride_in_1x1=stride_in_1x1)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        flops = FlopCountAnalysis(model, torch.zeros(1, 3, size, size))
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = flops.total()
    return params, macs


def complexity_table(templates, **kwargs):
    """One row per template: counts, the paper's figure, and the relative deviation."""
    rows = []
    for template in templates:
        params, macs = count_complexity(template, **kwargs)
        paper = PAPER_FIGURES.get(template.name)
        row = dict(template=template.name, C=template.cardinality, d=template.bottleneck_width,
                   params_m=params / 1e6, gflops=macs / 1e9, paper=paper)
        if paper is not None:
            row["gflops_dev"] = row["gflops"] / paper.gflops - 1
            if paper.params_m is not None:
                row["params_dev"] = row["params_m"] / paper.params_m - 1
        rows.append(row)
    return rows
