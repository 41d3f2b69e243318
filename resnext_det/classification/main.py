"""The body of tools/pretrain_cls.py: config set-up, the per-process main, and launching.

    python tools/pretrain_cls.py --config-file configs/cls/imagenet_X50_32x4d.yaml --num-gpus 8
    torchrun --nproc_per_node 8 tools/pretrain_cls.py --config-file ...   # same run
"""
import logging
import os

import torch
import torch.distributed as dist
from detectron2.engine import default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config.checks import check_output_dir, check_resnext_keys
from ..engine.setup import device_fallback
from ..utils.cli import ExitOnUserError, quiet_user_errors, run_tool
from .config import get_cls_cfg
from .trainer import ClsTrainer, evaluate_only


def setup_cls_cfg(args):
    """get_cls_cfg -> merge_from_file -> merge_from_list -> CPU fallback -> freeze -> setup."""
    cfg = get_cls_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    check_resnext_keys(cfg)
    note = device_fallback(cfg)
    cfg.freeze()
    check_output_dir(cfg)
    default_setup(cfg, args)  # logging, seeds, OUTPUT_DIR/config.yaml
    quiet_user_errors()
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resnext_det")
    if note:
        logging.getLogger("detectron2").warning(note)
    return cfg


def main(args):
    """Per-process entry point: train (or evaluate with --eval-only); returns the evaluation."""
    cfg = setup_cls_cfg(args)
    if args.eval_only:
        return evaluate_only(cfg, resume=args.resume)
    trainer = ClsTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    result = trainer.train()
    comm.synchronize()
    return result


def under_torchrun():
    return "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def init_from_torchrun():
    """The process group torchrun describes in the environment (env://)."""
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method="env://")
    comm.create_local_process_group(int(os.environ["LOCAL_WORLD_SIZE"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    comm.synchronize()


def launch_cls(args):
    """Run `main` in this process (torchrun, or one process) or spawn --num-gpus of them."""
    guarded = ExitOnUserError(main)  # bad input: one message, exit status 2
    if under_torchrun():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            init_from_torchrun()
        return guarded(args)
    return run_tool(lambda: launch(guarded, args.num_gpus, num_machines=args.num_machines,
                                   machine_rank=args.machine_rank, dist_url=args.dist_url,
                                   args=(args,)))
