#!/usr/bin/env python
"""Print parameters and multiply-adds of ResNeXt classifiers next to the paper's figures.

    python tools/analyze_complexity.py                       # Tables 3 and 4 of the paper
    python tools/analyze_complexity.py --templates X50_16x8d X152_32x4d
    python tools/analyze_complexity.py --cardinalities 1 2 3 16 64   # width solver only

Counts come from fvcore's FlopCountAnalysis (one multiply-add = one FLOP, the paper's
convention) for one 224x224 image and 1000 classes, stride in the 3x3 as in the paper.
Exits 1 when a template with a paper figure falls outside that figure's tolerance (at
224x224 only: the paper's figures are for that size); bad arguments exit 2.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import sys

import torch
from tabulate import tabulate

from resnext_det.analysis import complexity_table
from resnext_det.config.errors import ConfigError
from resnext_det.modeling import resnext_classifier
from resnext_det.modeling.templates import (
    TABLE3,
    TABLE4,
    bottleneck_params,
    complexity_preserving_width,
    parse_template,
)


def _fmt_dev(row, key, paper):
    return "" if paper is None or key not in row else f"{row[key]:+.1%}"


PAPER_SIZE = 224  # the input side of the paper's figures
MAX_WIDTH = 4096  # C x d of res2 above which a model is too large to count here
# weights (float32) above which it is too: C=1 makes the grouped 3x3s dense, so that
# X50_1x4096d has 47e9 (175 GiB) within MAX_WIDTH; X101_32x48d, the largest published, 0.83e9
MAX_PARAMS = 2e9


def complexity_rows(rows, size=PAPER_SIZE):
    out, ok = [], True
    for row in rows:
        paper = row["paper"] if size == PAPER_SIZE else None  # not comparable at another size
        within = paper is None or (
            abs(row["gflops_dev"]) <= paper.tolerance
            and abs(row.get("params_dev", 0.0)) <= paper.tolerance)
        ok &= within
        out.append([
            row["template"], row["C"], row["d"], f"{row['params_m']:.2f}",
            "" if paper is None or paper.params_m is None else paper.params_m, _fmt_dev(row, "params_dev", paper),
            f"{row['gflops']:.2f}", "" if paper is None else paper.gflops, _fmt_dev(row, "gflops_dev", paper),
            "" if paper is None else f"{paper.tolerance:.0%}", "" if paper is None else paper.source,
            "" if paper is None else ("yes" if within else "NO"),
        ])
    return out, ok


def solver_rows(cardinalities):
    reference = bottleneck_params(1, 64)
    rows = []
    for c in cardinalities:
        d = complexity_preserving_width(c)
        params = bottleneck_params(c, d)
        rows.append([c, d, f"{c}x{d}d", params, f"{params / reference - 1:+.1%}"])
    return rows


# fvcore counts on a real forward: R50 at 20000 px asked for one 4.8 GB tensor (and more);
# at 4096 px that tensor is 0.2 GB. The paper's figures are at 224.
MAX_SIZE = 4096


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", nargs="*", help="template names (default: Tables 3 and 4)")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--stride-in-1x1", action="store_true", help="MSRA/Caffe2 stride placement")
    parser.add_argument("--cardinalities", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32, 64],
                        help="C values for the complexity-preserving width solver")
    parser.add_argument("--solver-only", action="store_true", help="skip the fvcore counts")
    args = parser.parse_args(argv)
    if not 32 <= args.size <= MAX_SIZE:
        parser.error(f"--size {args.size}: expected 32 (ResNeXt downsamples by 32) to "
                     f"{MAX_SIZE} (a larger one's activations outgrow a machine's memory)")
    if args.templates == []:  # `--templates` with no name: not the default tables unasked
        parser.error("--templates: expected one or more template names, e.g. X50_32x4d")
    if not args.cardinalities or any(c < 1 for c in args.cardinalities):
        parser.error(f"--cardinalities {args.cardinalities}: expected integers >= 1")
    templates = [_template(parser, n) for n in args.templates] if args.templates else TABLE3 + TABLE4

    print("Complexity-preserving bottleneck width (paper Table 2: res2 block of ResNet-50 = "
          f"{bottleneck_params(1, 64):,} weights)")
    print(tabulate(solver_rows(args.cardinalities),
                   headers=["C", "d", "template", "res2 block weights", "vs ResNet"]))
    if args.solver_only:
        return 0
    rows, ok = complexity_rows(complexity_table(templates, size=args.size,
                                                stride_in_1x1=args.stride_in_1x1), args.size)
    print(f"\nClassifier at {args.size}x{args.size}, 1000 classes, stride in the "
          f"{'1x1' if args.stride_in_1x1 else '3x3'} (fvcore counts; FLOPs = multiply-adds)")
    print(tabulate(rows, headers=["template", "C", "d", "params M", "paper", "dev", "GFLOPs",
                                  "paper", "dev", "tol", "source", "within"]))
    if args.size != PAPER_SIZE:
        print(f"(the paper's figures are for {PAPER_SIZE}x{PAPER_SIZE}: not compared)")
    return 0 if ok else 1


def _template(parser, name):
    """The Template `name` stands for; a bad or oversized one ends the tool (exit 2)."""
    try:
        template = parse_template(name)
    except ConfigError as e:
        part = {"MODEL.RESNETS.DEPTH": "depth", "MODEL.RESNETS.NUM_GROUPS": "C",
                "MODEL.RESNETS.WIDTH_PER_GROUP": "d"}.get(e.key)
        parser.error(f"--templates {name!r} is not valid: expected "
                     f"{f'{part} ' if part else ''}{e.expected}")
    width = template.cardinality * template.bottleneck_width
    if width > MAX_WIDTH:
        parser.error(f"--templates {name!r}: C x d = {width} is over {MAX_WIDTH} (the widest "
                     "published ResNeXt, X101_32x48d, has 1536)")
    with torch.device("meta"):  # shapes only: no memory
        params = sum(p.numel() for p in resnext_classifier(template).parameters())
    if params > MAX_PARAMS:
        parser.error(f"--templates {name!r}: {params / 1e9:.1f}e9 weights ({params * 4 / 2**30:.0f} "
                     f"GiB) are over {MAX_PARAMS / 1e9:.0f}e9, more than a machine's memory holds "
                     "to count (X101_32x48d, the largest published ResNeXt, has 0.83e9)")
    return template


if __name__ == "__main__":
    sys.exit(main())
