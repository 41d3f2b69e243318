"""Config set-up in detectron2's canonical order, for the command-line tools."""
import logging

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup

from ..config.defaults import add_resnext_config


def device_fallback(cfg):
    """MODEL.DEVICE 'cuda...' on a machine without CUDA -> 'cpu'; returns a note or None."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        return "No CUDA device here: MODEL.DEVICE set to 'cpu'."
    return None


def setup_cfg(args):
    """get_cfg -> add_resnext_config -> merge_from_file -> merge_from_list -> freeze -> default_setup."""
    cfg = get_cfg()
    add_resnext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    note = device_fallback(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    if note:
        logging.getLogger("detectron2").warning(note)
    return cfg
