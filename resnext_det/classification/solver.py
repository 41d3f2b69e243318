"""SGD and the learning-rate schedule, in epochs.

The paper (Sec 4) trains with SGD, momentum 0.9, weight decay 1e-4 and lr 0.1 for a
mini-batch of 256, dividing it by 10 three times, following fb.resnet.torch's every-30
epochs. Other batch sizes use the linear scaling rule (Goyal et al. 2017): lr = 0.1 *
batch / 256, with an optional linear warmup from a fraction of it.
"""
import math

import torch

from ..config.errors import ConfigError

SCHEDULERS = ("step", "cosine")


def scaled_lr(base_lr, batch_size, reference_batch):
    """Linear scaling: BASE_LR is the lr for REFERENCE_BATCH images per iteration."""
    return base_lr * batch_size / reference_batch


class EpochSchedule:
    """lr as a function of the iteration, with the schedule written in epochs.

    A pure function of the iteration, so a run resumed at iteration i continues with
    exactly the lr it would have had; `state_dict` records the last iteration applied.
    """

    def __init__(self, lr, iters_per_epoch, max_epochs, *, kind="step", steps=(30, 60, 90),
                 gamma=0.1, warmup_epochs=0.0, warmup_factor=0.1):
        self.lr, self.iters_per_epoch, self.max_epochs = lr, iters_per_epoch, max_epochs
        self.kind, self.steps, self.gamma = kind, tuple(steps), gamma
        self.warmup_epochs, self.warmup_factor = warmup_epochs, warmup_factor
        self.last_iteration = -1

    def factor(self, epoch):
        """The multiplier of lr at a (fractional) epoch."""
        if self.kind == "step":
            value = self.gamma ** sum(epoch >= s for s in self.steps)
        else:
            value = 0.5 * (1.0 + math.cos(math.pi * min(epoch / self.max_epochs, 1.0)))
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            value *= self.warmup_factor * (1 - alpha) + alpha
        return value

    def lr_at(self, iteration):
        return self.lr * self.factor(iteration / self.iters_per_epoch)

    def apply(self, optimizer, iteration):
        """Set the lr of every parameter group for `iteration`; returns it."""
        lr = self.lr_at(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.last_iteration = iteration
        return lr

    def state_dict(self):
        return {"last_iteration": self.last_iteration, "lr": self.lr, "kind": self.kind}

    def load_state_dict(self, state):
        self.last_iteration = state["last_iteration"]


def check_solver(s):
    """ConfigErrors naming the SOLVER key that cannot work."""
    if s.LR_SCHEDULER not in SCHEDULERS:
        raise ConfigError("SOLVER.LR_SCHEDULER", s.LR_SCHEDULER, f"one of {list(SCHEDULERS)}")
    if list(s.STEPS) != sorted(s.STEPS) or any(step <= 0 for step in s.STEPS):
        raise ConfigError("SOLVER.STEPS", list(s.STEPS), "increasing epochs > 0, e.g. (30, 60, 90)")
    for key in ("IMS_PER_BATCH", "REFERENCE_BATCH", "MAX_EPOCHS"):
        if s[key] <= 0:
            raise ConfigError(f"SOLVER.{key}", s[key], "a number > 0")


def build_schedule(cfg, iters_per_epoch):
    s = cfg.SOLVER
    check_solver(s)
    lr = scaled_lr(s.BASE_LR, s.IMS_PER_BATCH, s.REFERENCE_BATCH)
    return EpochSchedule(lr, iters_per_epoch, s.MAX_EPOCHS, kind=s.LR_SCHEDULER, steps=s.STEPS,
                         gamma=s.GAMMA, warmup_epochs=s.WARMUP_EPOCHS,
                         warmup_factor=s.WARMUP_FACTOR)


def build_optimizer(cfg, model):
    """SGD with momentum and weight decay on every parameter (the lr is set per iteration)."""
    s = cfg.SOLVER
    return torch.optim.SGD(model.parameters(), lr=scaled_lr(s.BASE_LR, s.IMS_PER_BATCH,
                                                            s.REFERENCE_BATCH),
                           momentum=s.MOMENTUM, nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY)
