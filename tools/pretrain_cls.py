#!/usr/bin/env python
"""Pretrain a ResNeXt classifier whose checkpoint starts a detector (MODEL.WEIGHTS).

    python tools/pretrain_cls.py --config-file configs/cls/imagenet_X50_32x4d.yaml --num-gpus 8
    python tools/pretrain_cls.py --config-file ... --resume             # after a kill
    python tools/pretrain_cls.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    torchrun --nnodes 2 --nproc_per_node 8 ... tools/pretrain_cls.py --config-file ...

detectron2's arguments (--num-gpus, --num-machines, --machine-rank, --dist-url) and
`KEY VALUE` overrides. Writes <OUTPUT_DIR>/model_*.pth (resumable), metrics.json and
TensorBoard events (detectron2's writers, as tools/train_net.py), and at the end
model_final.pkl: the weights for tools/train_net.py ... MODEL.WEIGHTS <OUTPUT_DIR>/model_final.pkl.
Bad input ends with one `error: ...` line and exit status 2.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import os

import torch
import torch.distributed as dist

# first: it registers the backbones, and quiets detectron2's import warnings
import resnext_det  # noqa: F401

from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm

from resnext_det.classification import main
from resnext_det.utils.cli import ExitOnUserError, parse_launch_args, run_tool


def init_from_torchrun():
    """The process group torchrun describes in the environment (env://)."""
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    comm.create_local_process_group(int(os.environ["LOCAL_WORLD_SIZE"]))
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    comm.synchronize()


def run(argv=None):
    """`main` in this process (under torchrun, which started the processes) or in the
    --num-gpus x --num-machines processes of detectron2's `launch`."""
    args = parse_launch_args(default_argument_parser(), argv)
    guarded = ExitOnUserError(main)  # bad input: one message, exit status 2
    if "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            init_from_torchrun()
        return guarded(args)
    return run_tool(lambda: launch(guarded, args.num_gpus, num_machines=args.num_machines,
                                   machine_rank=args.machine_rank, dist_url=args.dist_url,
                                   args=(args,)))


if __name__ == "__main__":
    run()
