"""SGD, and the lr schedule in epochs as fvcore param schedulers in detectron2's LRMultiplier.

The paper (Sec 4): lr 0.1 per 256 images divided by 10 three times (fb.resnet.torch: every
30 epochs); other batch sizes scale it linearly (Goyal et al. 2017), optionally warmed up.
"""
import logging

import torch
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

from ..config.pretraining_checks import check_pretraining_solver, sub_epochs

logger = logging.getLogger(__name__)


def scaled_lr(s):
    """Linear scaling: SOLVER.BASE_LR is the lr for SOLVER.REFERENCE_BATCH images."""
    return s.BASE_LR * s.IMS_PER_BATCH / s.REFERENCE_BATCH


def build_optimizer(cfg, model):
    """SGD with momentum and weight decay on every parameter (norms included)."""
    s = cfg.SOLVER
    return torch.optim.SGD(model.parameters(), lr=scaled_lr(s), momentum=s.MOMENTUM,
                           nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY)


def build_param_scheduler(s):
    """The lr multiplier as a function of the fraction of SOLVER.MAX_EPOCHS done, for
    detectron2's LRMultiplier; checks the SOLVER keys.

    Args:
        s: the SOLVER node.
    Returns:
        fvcore ParamScheduler: MultiStep (x GAMMA at each epoch of STEPS) or Cosine (1 -> 0),
        with a linear warmup from WARMUP_FACTOR over WARMUP_EPOCHS.
    """
    check_pretraining_solver(s)
    if s.LR_SCHEDULER == "cosine":
        schedule = CosineParamScheduler(1.0, 0.0)
    else:
        steps = [e for e in s.STEPS if e < s.MAX_EPOCHS]
        if len(steps) < len(s.STEPS):
            logger.warning(f"SOLVER.STEPS {list(s.STEPS)}: steps at or past SOLVER.MAX_EPOCHS "
                           f"{s.MAX_EPOCHS} are never reached")
        # fvcore counts whole updates: in 1/1000 epochs, a step at epoch 1.5 stays at 1.5
        schedule = MultiStepParamScheduler(
            [s.GAMMA ** k for k in range(len(steps) + 1)], num_updates=sub_epochs(s.MAX_EPOCHS),
            milestones=[sub_epochs(e) for e in steps])
    if s.WARMUP_EPOCHS > 0:
        schedule = WarmupParamScheduler(schedule, s.WARMUP_FACTOR, s.WARMUP_EPOCHS / s.MAX_EPOCHS)
    return schedule

