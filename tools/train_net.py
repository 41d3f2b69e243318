#!/usr/bin/env python
"""Train or evaluate a ResNeXt detector with detectron2.

    python tools/train_net.py --config-file configs/faster_rcnn_X50_32x4d.yaml
    python tools/train_net.py --config-file configs/faster_rcnn_X50_32x4d.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume          # continue from the last checkpoint

detectron2's arguments (--num-gpus, --num-machines, --machine-rank, --dist-url) and
`KEY VALUE` overrides. Without a GPU it runs on the CPU; --num-gpus N then starts N CPU
processes (gloo). A config whose DATASETS name digits_train / digits_val (the demo set,
configs/demo/) gets them registered at $DETECTRON2_DATASETS/digits unless they already
are. Bad input (a config value, a weights file, a dataset) ends with one `error: ...` line
naming it and exit status 2; RESNEXT_DET_DEBUG=1 adds the traceback.
"""
from detectron2.engine import default_argument_parser, launch

import resnext_det  # noqa: F401  (registers the backbones and the C4 ROI head)
from resnext_det.data import register_digits_named_in
from resnext_det.engine import run as run_config
from resnext_det.engine import setup_cfg
from resnext_det.utils.cli import ExitOnUserError, run_tool


def main(args):
    """Per-process entry point: set up the config, register the demo sets it names, run."""
    cfg = setup_cfg(args)
    register_digits_named_in(cfg)
    return run_config(cfg, args)


def run(argv=None):
    args = default_argument_parser().parse_args(argv)
    return run_tool(lambda: launch(ExitOnUserError(main), args.num_gpus,
                                   num_machines=args.num_machines, machine_rank=args.machine_rank,
                                   dist_url=args.dist_url, args=(args,)))


if __name__ == "__main__":
    run()
