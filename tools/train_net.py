#!/usr/bin/env python
"""Train or evaluate a ResNeXt detector with detectron2.

    python tools/train_net.py --config-file configs/faster_rcnn_X50_32x4d.yaml
    python tools/train_net.py --config-file configs/faster_rcnn_X50_32x4d.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume          # continue from the last checkpoint
    python tools/train_net.py --config-file configs/lazy/mask_rcnn_X101_32x8d_FPN_1x.py train.max_iter=1000

detectron2's arguments (--num-gpus, --num-machines, --machine-rank, --dist-url) and
`KEY VALUE` overrides. Without a GPU it runs on the CPU; --num-gpus N then starts N CPU
processes (gloo). `--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR` (repeatable, before the
overrides) registers a COCO instances json for DATASETS.TRAIN / TEST, its NUM_CLASSES taken
from the json when the config leaves it unset (resnext_det/data/coco_json.py). A config
whose DATASETS name digits_train / digits_val (the demo set, configs/demo/) gets them
registered at $DETECTRON2_DATASETS/digits unless they already are. A Python config
(`.py`, detectron2's LazyConfig, configs/lazy/) runs as detectron2's
lazyconfig_train_net.py runs it, with `key=value` overrides (resnext_det/engine/lazy.py).
Bad input (a config value, a weights file, a dataset) ends with one `error: ...` line
naming it and exit status 2; RESNEXT_DET_DEBUG=1 adds the traceback.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

# first: it registers the backbones and the C4 ROI head, and quiets detectron2's import warnings
import resnext_det  # noqa: F401

from detectron2.engine import default_argument_parser, launch

from resnext_det.data import register_digits_named_in
from resnext_det.data.coco_json import add_dataset_argument, register_dataset_args
from resnext_det.engine import run as run_config
from resnext_det.engine import lazy_main, setup_cfg, task_of
from resnext_det.utils.cli import ExitOnUserError, parse_launch_args, run_tool


def main(args):
    """Per-process entry point: set up the config, register the demo sets it names, run."""
    args = register_dataset_args(args)  # --dataset: checked, registered; NUM_CLASSES from the json
    if args.config_file.endswith(".py"):
        return lazy_main(args)
    cfg = setup_cfg(args, task=task_of(args))
    register_digits_named_in(cfg)
    return run_config(cfg, args)


def run(argv=None):
    args = parse_launch_args(add_dataset_argument(default_argument_parser()), argv)
    return run_tool(lambda: launch(ExitOnUserError(main), args.num_gpus,
                                   num_machines=args.num_machines, machine_rank=args.machine_rank,
                                   dist_url=args.dist_url, args=(args,)))


if __name__ == "__main__":
    run()
