#!/usr/bin/env python
"""Pretrain a ResNeXt classifier whose checkpoint starts a detector (MODEL.WEIGHTS).

    python tools/pretrain_cls.py --config-file configs/cls/imagenet_X50_32x4d.yaml --num-gpus 8
    python tools/pretrain_cls.py --config-file ... --resume             # after a kill
    python tools/pretrain_cls.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    torchrun --nnodes 2 --nproc_per_node 8 ... tools/pretrain_cls.py --config-file ...

detectron2's arguments (--num-gpus, --num-machines, --machine-rank, --dist-url) and
`KEY VALUE` overrides. Writes <OUTPUT_DIR>/model_*.pth (resumable), metrics.json,
tensorboard/, and at the end model_final.pkl: the weights for
tools/train_net.py ... MODEL.WEIGHTS <OUTPUT_DIR>/model_final.pkl.
"""
import resnext_det  # noqa: F401  (registers the backbones)
from detectron2.engine import default_argument_parser
from resnext_det.classification import launch_cls


def run(argv=None):
    return launch_cls(default_argument_parser().parse_args(argv))


if __name__ == "__main__":
    run()
