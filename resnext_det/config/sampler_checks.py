"""Checks of the keys detectron2's train loader reads for DATALOADER.SAMPLER_TRAIN's
sampler (data/build.py _train_loader_from_config)."""
import logging

from detectron2.utils import comm

from .errors import ConfigError, check_number, is_positive

logger = logging.getLogger(__name__)

# The keys besides DATASETS.TRAIN that detectron2's loader reads for a sampler (data/build.py
# _train_loader_from_config): {key: (the value at which it does nothing, the samplers reading it)}
SAMPLER_KEYS = {
    "DATALOADER.RANDOM_SUBSET_RATIO": (1.0, ("RandomSubsetTrainingSampler",)),
    "DATALOADER.REPEAT_THRESHOLD": (0.0, ("RepeatFactorTrainingSampler",
                                          "WeightedCategoryTrainingSampler")),
    "DATASETS.TRAIN_REPEAT_FACTOR": ([], ("WeightedTrainingSampler",
                                          "WeightedCategoryTrainingSampler")),
}


def _sampler_key(cfg, key):
    node, name = key.split(".")
    value = cfg[node][name]
    return list(value) if isinstance(value, tuple) else value


def _warn_unread_sampler_keys(cfg):
    """A sampler's key set while DATALOADER.SAMPLER_TRAIN is another sampler: detectron2
    ignores it without a word (a subset ratio trained on every image)."""
    sampler = cfg.DATALOADER.SAMPLER_TRAIN
    for key, (idle, readers) in SAMPLER_KEYS.items():
        value = _sampler_key(cfg, key)
        if sampler not in readers and value != idle and comm.is_main_process():
            logger.warning(f"{key}={value!r} is read only by {' and '.join(readers)}: "
                           f"DATALOADER.SAMPLER_TRAIN {sampler!r} ignores it. Choose the "
                           "sampler it is meant for, or leave the key out.")


def check_sampler_keys(cfg):
    """The keys of DATALOADER.SAMPLER_TRAIN's sampler (detectron2: an AssertionError, a
    math domain, OverflowError or KeyError in the loader; REPEAT_THRESHOLD 0 repeats no
    image), and a warning for keys that only another sampler reads."""
    sampler = cfg.DATALOADER.SAMPLER_TRAIN
    _warn_unread_sampler_keys(cfg)
    if sampler == "RandomSubsetTrainingSampler":
        ratio = cfg.DATALOADER.RANDOM_SUBSET_RATIO
        if not (is_positive(ratio) and ratio <= 1):
            raise ConfigError("DATALOADER.RANDOM_SUBSET_RATIO", ratio, "a fraction in (0, 1] "
                              "of the training images to sample from")
        if cfg.SEED < 0:  # the subset is drawn from the seed (comm.shared_random_seed)
            raise ConfigError("SEED", cfg.SEED, "a fixed seed >= 0 with DATALOADER.SAMPLER_TRAIN "
                              "RandomSubsetTrainingSampler", "Its subset is drawn from the seed: "
                              "with a random one, a --resume trains on another subset.")
    if sampler in SAMPLER_KEYS["DATALOADER.REPEAT_THRESHOLD"][1]:
        check_number("DATALOADER.REPEAT_THRESHOLD", cfg.DATALOADER.REPEAT_THRESHOLD, 1e-300,
                     meaning="> 0: images of a category in fewer than this fraction of the "
                     "images are repeated (LVIS: 0.001); 0 repeats none")
    if sampler in SAMPLER_KEYS["DATASETS.TRAIN_REPEAT_FACTOR"][1]:
        factors = [list(f) if isinstance(f, (list, tuple)) else f
                   for f in cfg.DATASETS.TRAIN_REPEAT_FACTOR]
        valid = all(isinstance(f, list) and len(f) == 2 and f[0] in cfg.DATASETS.TRAIN
                    and is_positive(f[1]) for f in factors)
        if not valid or len({f[0] for f in factors}) != len(factors):  # dict(): the last won
            raise ConfigError("DATASETS.TRAIN_REPEAT_FACTOR", factors, "[name, factor] pairs, "
                              "factors finite numbers > 0, each dataset of DATASETS.TRAIN "
                              f"{list(cfg.DATASETS.TRAIN)} at most once",
                              f"{sampler} samples each dataset by its factor (1 if not given).")
        if sampler == "WeightedTrainingSampler" and not factors:  # all 1: TrainingSampler's
            raise ConfigError("DATASETS.TRAIN_REPEAT_FACTOR", factors, "at least one [name, "
                              "factor] pair for WeightedTrainingSampler, which samples each "
                              "dataset of DATASETS.TRAIN by its factor (1 if not given)")
