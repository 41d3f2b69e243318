"""The keys of a pretraining config (classification/config.py), checked before a dataset or
model is built: torch and detectron2 raise on them late (TEST.IMS_PER_BATCH at the first
evaluation), bare (a DataLoader's ValueError), or not at all (a negative GAMMA or
WARMUP_FACTOR trains by gradient ascent)."""
from detectron2.utils import comm

from ..modeling.config_args import NORMS
from .checks import check_optimizer_numbers
from .errors import ConfigError, check_choice, check_number, check_whole

ARCHS = ("imagenet", "cifar")
LR_SCHEDULERS = ("step", "cosine")


def sub_epochs(epochs):
    """Epochs in the 1/1000 epochs the step schedule counts (fvcore counts whole updates)."""
    return round(epochs * 1000)


def check_pretraining_solver(s):
    """SOLVER's schedule, checkpoint and optimizer values."""
    check_choice("SOLVER.LR_SCHEDULER", s.LR_SCHEDULER, LR_SCHEDULERS)
    check_whole("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, 1, " (images over all processes)")
    check_whole("SOLVER.REFERENCE_BATCH", s.REFERENCE_BATCH, 1, " (the batch BASE_LR is for)")
    check_number("SOLVER.MAX_EPOCHS", s.MAX_EPOCHS, 1e-300, meaning="> 0")
    check_whole("SOLVER.MAX_ITER", s.MAX_ITER, 0, " (0: MAX_EPOCHS)")
    check_number("SOLVER.WARMUP_EPOCHS", s.WARMUP_EPOCHS, 0, meaning=">= 0")
    if s.WARMUP_EPOCHS > s.MAX_EPOCHS:  # was: the ramp squeezed into the run, steeper than asked
        raise ConfigError("SOLVER.WARMUP_EPOCHS", s.WARMUP_EPOCHS, f"at most SOLVER.MAX_EPOCHS="
                          f"{s.MAX_EPOCHS}", "The warmup ramps the lr over WARMUP_EPOCHS epochs "
                          "of the run; shorten it or train longer.")
    check_whole("SOLVER.MAX_TO_KEEP", s.MAX_TO_KEEP, 0, " (0: keep all)")  # detectron2 asserts
    check_whole("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, 0, " (iterations; 0: each "
                "epoch)")
    check_optimizer_numbers(s)
    if (list(s.STEPS) != sorted(set(s.STEPS)) or any(sub_epochs(step) <= 0 for step in s.STEPS)
            or len({sub_epochs(step) for step in s.STEPS}) < len(s.STEPS)):
        raise ConfigError("SOLVER.STEPS", list(s.STEPS), "increasing epochs > 0 (to 1/1000 "
                          "epoch), e.g. (30, 60, 90)")


def check_pretraining_model(cfg):
    """MODEL.ARCH, and a MODEL.RESNETS.NORM that learns and runs on MODEL.DEVICE."""
    check_choice("MODEL.ARCH", cfg.MODEL.ARCH, ARCHS)
    norm = cfg.MODEL.RESNETS.NORM
    if norm == "FrozenBN" or norm not in NORMS:
        raise ConfigError("MODEL.RESNETS.NORM", norm, "one of ['BN', 'SyncBN', 'naiveSyncBN', "
                          "'GN']", "Pretraining needs a norm that learns.")
    if norm == "SyncBN" and cfg.MODEL.DEVICE == "cpu":
        raise ConfigError("MODEL.RESNETS.NORM", "SyncBN", "'naiveSyncBN' or 'BN' on the CPU",
                          "torch's SyncBatchNorm runs on CUDA only; detectron2's naiveSyncBN "
                          "all-reduces the batch statistics over gloo as well.")


def check_pretraining_keys(cfg):
    """The batches (each a multiple of this run's process count), periods, loader workers
    and model a pretraining run or its --eval-only reads, before its data folders are
    listed (ImageNet's 1.28M files); SOLVER's by check_pretraining_solver."""
    world = comm.get_world_size()
    for key, batch in (("SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH),
                       ("TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH)):
        check_whole(key, batch, 1, " (images over all processes)")
        if batch % world:
            raise ConfigError(key, batch, f"a multiple of the number of processes ({world}): "
                              "it is the batch of all of them")
    check_whole("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, 0, " (epochs; 0: at the end only)")
    check_whole("LOG_PERIOD", cfg.LOG_PERIOD, 1, " (iterations)")
    check_whole("DATA.NUM_WORKERS", cfg.DATA.NUM_WORKERS, 0, " (0: in the training process)")
    check_pretraining_model(cfg)
