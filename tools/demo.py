#!/usr/bin/env python
"""The demo that runs anywhere (the README's main command, `make demo`).

Builds the digits demo set ($DETECTRON2_DATASETS/digits, default ./datasets/digits) if
needed, trains the small ResNeXt Faster R-CNN of configs/demo/faster_rcnn_X50_digits.yaml
on the CPU, evaluates COCO box AP on the val split, and writes into OUTPUT_DIR
(default output/demo): model_final.pth, metrics.json, inference/digits_val/coco_metrics.json,
predictions.png (detections on val images) and curves.png (loss and AP).

    python tools/demo.py
    python tools/demo.py SOLVER.MAX_ITER 300 OUTPUT_DIR output/demo_short
"""
import sys

import resnext_det  # noqa: F401  (registration)
from resnext_det.engine.demo import DEMO_CONFIG, run_demo
from resnext_det.utils.cli import ExitOnUserError


def run(argv=None):
    opts = sys.argv[1:] if argv is None else argv
    if opts and opts[0] in ("-h", "--help"):
        print(__doc__)
        return None
    return ExitOnUserError(run_demo)(DEMO_CONFIG, opts)  # bad input: one error line, exit 2


if __name__ == "__main__":
    run()
