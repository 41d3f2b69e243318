#!/usr/bin/env python
"""Detections on your own pictures with a trained model: drawn pictures and COCO results.

    python tools/predict.py --config-file configs/demo/faster_rcnn_X50_digits.yaml \\
        --input photos/ 'more/*.jpg' clip.mp4 --output out/ \\
        MODEL.WEIGHTS output/demo/model_final.pth

--input takes files, folders (their images and videos, not recursive), globs (quote them;
`**` recurses) and videos (read frame by frame by OpenCV). Writes into --output one
picture per image (`<name>.png`) or an `.mp4` per video, drawn by detectron2's Visualizer
with the class names of the config's DATASETS.TEST[0]; `coco_instances_results.json` for
all inputs (COCO results: image_id, category_id of the dataset's json, bbox as
[x, y, width, height], score); `images.json` (each image_id's file, frame and picture,
and the categories); config.yaml and log.txt. Pictures go through the model
--batch-size at a time (of one input size: padding would change the smaller ones'
detections), on the MODEL.RESNEXT.FAST_INFERENCE copy. A missing or unreadable
input is named and skipped, and the run ends saying how many were; none readable is an
error. `--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR` registers a COCO json (for its class
names: DATASETS.TEST "('NAME',)"). `KEY VALUE` overrides come last; MODEL.WEIGHTS of any
format tools/convert_weights.py reads. An earlier prediction in --output moves whole to
`<output>.before-<time>`. Bad input ends with `error: ...` and exit status 2.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import logging
import math
import os

# first: it registers the backbones and the C4 ROI head, and quiets detectron2's import warnings
import resnext_det  # noqa: F401

from detectron2.config import get_cfg

from resnext_det.data import register_digits_named_in
from resnext_det.data.checks import DatasetError
from resnext_det.data.coco_json import add_dataset_argument, register_dataset_args
from resnext_det.data.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, expand_inputs
from resnext_det.engine import setup_cfg
from resnext_det.engine.predict import (check_output_dir_holds_no_input, claim_output_dir, predict,
                                       put_back_earlier_prediction)
from resnext_det.utils.cli import ExitOnUserError, run_tool
from resnext_det.utils.io import release_folder

_TOP_KEYS = set(resnext_det.add_resnext_config(get_cfg()).keys())  # MODEL, SOLVER, SEED, ...
_THRESHOLD_KEYS = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST",
                   "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH")


def _fraction(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _positive_float(text):
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number > 0")
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image or video files, folders, globs")
    parser.add_argument("--output", required=True, metavar="DIR", help="becomes OUTPUT_DIR")
    parser.add_argument("--confidence-threshold", type=_fraction, default=0.5,
                        help="lowest score kept (default 0.5, as detectron2's demo)")
    parser.add_argument("--batch-size", type=_positive, default=8, help="pictures per forward")
    parser.add_argument("--scale", type=_positive_float, default=1.0,
                        help="drawn picture size / input size")
    add_dataset_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def _is_key(text):
    """A config key (MODEL.WEIGHTS, SEED), not a file such as IMG_0001.JPG or MODEL.PTH, nor
    a missing picture such as TEST.jpg (its overrides were blamed: "odd length")."""
    named_file = os.path.splitext(text)[1].lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    return text.split(".")[0] in _TOP_KEYS and not os.path.exists(text) and not named_file


def parse_args(argv=None):
    """The arguments; `KEY VALUE` pairs that --input's nargs took are moved back to opts.
    --confidence-threshold comes before them: a SCORE_THRESH_TEST the user names wins."""
    args = argument_parser().parse_args(argv)
    cut = next((i for i, text in enumerate(args.input) if _is_key(text)), None)
    if cut is not None:
        args.input, args.opts = args.input[:cut], args.input[cut:] + args.opts
    threshold = [x for key in _THRESHOLD_KEYS for x in (key, str(args.confidence_threshold))]
    args.opts = threshold + args.opts + ["OUTPUT_DIR", args.output]
    return args


def main(args):
    args = register_dataset_args(args)  # --dataset: checked, registered; NUM_CLASSES from the json
    paths, missing = expand_inputs(args.input)
    if not paths:
        raise DatasetError(f"--input names no image or video: {_reasons(missing)}.")
    check_output_dir_holds_no_input(args.output, paths)  # before config.yaml is written there
    kept = claim_output_dir(args.output)  # likewise: not a training's folder, nor the user's files
    try:
        cfg = setup_cfg(args, task="other")
        if kept:
            logging.getLogger("resnext_det").warning(f"{args.output} held an earlier "
                                                     f"prediction: kept in {kept}")
        register_digits_named_in(cfg)
        # a `kill` still writes the results of what was done (ExitOnUserError: SIGTERM as Ctrl-C)
        summary = predict(cfg, paths, args.output, batch_size=args.batch_size, scale=args.scale)
        return report(summary, missing)
    except BaseException:  # refused before its first result (a key, the weights, no input read)
        put_back_earlier_prediction(args.output, kept)
        raise
    finally:
        release_folder(args.output)  # the lock claim_output_dir took


def _reasons(skipped):
    return "; ".join(f"{path!r} {why}" for path, why in skipped)


def report(summary, missing):
    """Print what was done and what was skipped; an error when no picture could be read."""
    skipped = missing + summary["skipped"]
    if summary["pictures"] == 0:
        raise DatasetError(f"no input could be read: {_reasons(skipped)}.")
    n, seconds, model = summary["pictures"], summary["seconds"], summary["model_seconds"]
    print(f"Predicted {n} images, {summary['detections']} detections, in {seconds:.1f} s: "
          f"{n / seconds:.2f} images/s ({n / model:.2f} images/s in the model). Wrote "
          f"{', '.join(summary['files'])} and the pictures"
          + (f" (not {summary['undrawn']} too large to draw)." if summary["undrawn"] else "."))
    if skipped:
        print(f"Skipped {len(skipped)} inputs: {_reasons(skipped)}.")
    return summary


def run(argv=None):
    args = parse_args(argv)
    return run_tool(lambda: ExitOnUserError(main)(args))


if __name__ == "__main__":
    run()
