#!/usr/bin/env python
"""Pretrain on digits classification, fine-tune the detection demo, compare with scratch.

    python tools/pretrain_then_detect.py --cls-epochs 100 --det-iters 800   # 11 min on 2 CPU cores

Writes <output>/{pretrain,finetune,scratch}/ and <output>/summary.json, and prints both
box APs with the times (resnext_det/classification/pipeline.py has the steps).
"""
import argparse

import resnext_det  # noqa: F401  (registers the backbones and the digits datasets)
from resnext_det.classification.pipeline import run_pipeline


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cls-epochs", type=int, default=100, help="pretraining epochs")
    parser.add_argument("--det-iters", type=int, default=800,
                        help="detection iterations, for each of the two detectors (demo: 1500)")
    parser.add_argument("--output", default="output/pretrain_then_detect")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    print(f"Budget: {args.cls_epochs} pretraining epochs, "
          f"{args.det_iters} detection iterations for each detector")
    run_pipeline(args.output, cls_epochs=args.cls_epochs, det_iters=args.det_iters)
