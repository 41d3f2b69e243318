"""Config set-up in detectron2's canonical order, for the command-line tools."""
import logging

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config.defaults import add_resnext_config
from .weights import config_from_weights


def device_fallback(cfg):
    """MODEL.DEVICE 'cuda...' on a machine without CUDA -> 'cpu'; returns a note or None."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        return "No CUDA device here: MODEL.DEVICE set to 'cpu'."
    return None


def setup_cfg(args):
    """get_cfg -> add_resnext_config -> merge_from_file -> merge_from_list -> freeze -> default_setup.

    Between merge and freeze: the CPU fallback and MODEL.RESNEXT.CONFIG_FROM_WEIGHTS,
    whose changes are logged once default_setup has set up logging.
    """
    cfg = get_cfg()
    add_resnext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    notes = [device_fallback(cfg)] + config_from_weights(cfg)
    cfg.freeze()
    default_setup(cfg, args)  # sets up logging and writes the final config.yaml
    # our modules log under "resnext_det" (e.g. weights vs config warnings): same files
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resnext_det")
    for note in filter(None, notes):
        logging.getLogger("detectron2").warning(note)
    return cfg
