#!/usr/bin/env python
"""The demo that runs anywhere (the README's main command, `make demo`).

Builds the digits demo set ($DETECTRON2_DATASETS/digits, default ./datasets/digits) if
needed and registers it (digits_train, digits_val), trains the small ResNeXt Faster R-CNN
of configs/demo/faster_rcnn_X50_digits.yaml on the CPU, evaluates COCO box AP on the val
split, and writes into OUTPUT_DIR (default output/demo): model_final.pth, metrics.json,
inference/digits_val/coco_metrics.json, predictions.png (detections on val images) and
curves.png (loss and AP). Everything happens on what this machine has: the set is made
from scikit-learn's bundled handwritten digits, and the model is small enough to train on
2 CPU cores.

    python tools/demo.py
    python tools/demo.py SOLVER.MAX_ITER 300 OUTPUT_DIR output/demo_short
    python tools/demo.py --config-file configs/demo/mask_rcnn_X50_digits.yaml   # + mask AP
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import os
import sys
import time

# first: it registers the backbones and the C4 ROI head, and quiets detectron2's import warnings
import resnext_det  # noqa: F401

from detectron2.config import get_cfg
from detectron2.modeling import build_model

from resnext_det.checkpoint.checkpointer import CHECKPOINT_NAME, LAST
from resnext_det.config import add_resnext_config
from resnext_det.config.checks import merge_config
from resnext_det.config.errors import ConfigError
from resnext_det.data import digits_root, ensure_digits_dataset
from resnext_det.engine import build_checkpointer, setup_cfg, train
from resnext_det.engine.predict import inference_resize
from resnext_det.evaluation import METRICS_FILE
from resnext_det.utils.cli import ExitOnUserError
from resnext_det.utils.io import claim_folder, release_folder
from resnext_det.utils.plots import plot_training_curves
from resnext_det.utils.visualize import draw_predictions

DEMO_CONFIG = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                            "configs", "demo", "faster_rcnn_X50_digits.yaml"))
# 2000 train images of 128x128, 300 val; ~5 s to build on 2 cores.
DATASET = dict(num_train=2000, num_val=300, image_size=128, seed=0)


def demo_args(config_file, opts):
    """The arguments tools/train_net.py would parse for a one-process run."""
    return argparse.Namespace(config_file=config_file, opts=list(opts), eval_only=False,
                              resume=False, num_gpus=1, num_machines=1, machine_rank=0,
                              dist_url="auto")


def draw_demo_predictions(cfg, out_path):
    model = build_model(cfg)
    build_checkpointer(cfg, model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    # resized as the evaluation and predict.py resize (the grid drew the unresized pictures)
    return draw_predictions(model, cfg.DATASETS.TEST[0], out_path, input_format=cfg.INPUT.FORMAT,
                            aug=inference_resize(cfg))


DEMO_MARK = ".demo_output"  # in each output folder the demo (or pretrain_then_detect) wrote
EARLIER_DEMO = {"predictions.png", "curves.png"}  # what only the demo writes, before the mark


def output_dir_of(config_file, opts):
    """OUTPUT_DIR as the config file and the overrides set it (before setup_cfg writes there)."""
    cfg = add_resnext_config(get_cfg())
    merge_config(cfg, config_file, opts)
    return cfg.OUTPUT_DIR


def claim_demo_output(output_dir):
    """Make `output_dir` the demo's before anything is written there: new, empty, or a
    folder an earlier demo wrote (its mark; from before the mark, its predictions.png and
    curves.png). A folder of other files (another training's checkpoints) is an error: the
    demo replaces its previous run's files."""
    others = claim_folder(output_dir, DEMO_MARK, "tools/demo.py writes here\n")
    if others and EARLIER_DEMO <= set(others):  # a demo's from before the mark: the demo's
        with open(os.path.join(output_dir, DEMO_MARK), "w") as f:
            f.write("tools/demo.py writes here\n")
        return
    if others:
        raise ConfigError("OUTPUT_DIR", output_dir, "a folder the demo wrote, or an empty or "
                          f"new one (it holds {len(others)} files the demo did not write, e.g. "
                          f"{others[0]!r}, which its run would replace)",
                          "Choose another OUTPUT_DIR, or move those files away.")


def clear_previous_demo(output_dir):
    """The demo starts anew each time: a previous demo's checkpoints, metrics.json and
    (pretraining's) model_final.pkl in its output folder (claimed by claim_demo_output) are
    removed (a training would refuse to overwrite them)."""
    previous = [os.path.join(output_dir, name) for name in os.listdir(output_dir)
                if name in ("metrics.json", LAST, "model_final.pkl")
                or CHECKPOINT_NAME.fullmatch(name)]
    if previous:
        print(f"Replacing the previous demo run in {output_dir} ({len(previous)} files)")
    for path in previous:
        os.remove(path)


def run_demo(config_file=DEMO_CONFIG, opts=(), dataset=None):
    """Build and register the digits set, train, evaluate, draw, plot.

    Returns {"AP":..., "AP50":..., "mask AP": ... (None without masks), "seconds":...,
    files}; prints a summary.
    """
    start = time.perf_counter()
    ensure_digits_dataset(digits_root(), **(dataset or DATASET))  # registers digits_train/_val
    claim_demo_output(output_dir_of(config_file, opts))  # before setup_cfg writes there
    try:
        summary = _train_and_draw(config_file, opts, start)
    finally:
        release_folder(output_dir_of(config_file, opts))  # the claim's take, after the drawing
    return summary


def _train_and_draw(config_file, opts, start):
    cfg = setup_cfg(demo_args(config_file, opts), task="train")
    clear_previous_demo(cfg.OUTPUT_DIR)
    results = train(cfg)
    test_set = cfg.DATASETS.TEST[0]
    files = {
        "metrics": os.path.join(cfg.OUTPUT_DIR, "inference", test_set, METRICS_FILE),
        "predictions": draw_demo_predictions(cfg, os.path.join(cfg.OUTPUT_DIR, "predictions.png")),
        "curves": plot_training_curves(os.path.join(cfg.OUTPUT_DIR, "metrics.json"),
                                       os.path.join(cfg.OUTPUT_DIR, "curves.png"), title="demo"),
    }
    metrics = results.get(test_set, results) if results else {}
    bbox, segm = metrics.get("bbox", {}), metrics.get("segm", {})
    summary = {"AP": bbox.get("AP"), "AP50": bbox.get("AP50"), "mask AP": segm.get("AP"),
               "seconds": time.perf_counter() - start, **files}
    mask = f", mask AP {summary['mask AP']:.1f}" if segm else ""
    print(f"\nDemo: box AP {summary['AP']:.1f}, AP50 {summary['AP50']:.1f}{mask} on {test_set} "
          f"in {summary['seconds'] / 60:.1f} min.")
    for name, path in files.items():
        print(f"  {name}: {path}")
    return summary


def run(argv=None):
    opts = sys.argv[1:] if argv is None else argv
    if opts and opts[0] in ("-h", "--help"):
        print(__doc__)
        return None
    config_file = DEMO_CONFIG
    if opts[:1] == ["--config-file"] and len(opts) > 1:  # configs/demo/mask_rcnn_X50_digits.yaml
        config_file, opts = opts[1], opts[2:]
    return ExitOnUserError(run_demo)(config_file, opts)  # bad input: one error line, exit 2


if __name__ == "__main__":
    run()
