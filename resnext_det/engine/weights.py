"""MODEL.WEIGHTS of any supported format, and MODEL.RESNEXT.CONFIG_FROM_WEIGHTS."""
import os
import pickle

from ..checkpoint import ResNeXtCheckpointer, apply_metadata, convert_cached
from ..checkpoint.checkpointer import needs_conversion
from ..checkpoint.convert import AUTHOR


def build_checkpointer(cfg, model, **checkpointables):
    """The checkpointer of our tools: converts foreign weights on load, checks the config."""
    return ResNeXtCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg, **checkpointables)


def weights_metadata(cfg):
    """The metadata of MODEL.WEIGHTS (converted and cached if foreign), or None."""
    path = cfg.MODEL.WEIGHTS
    if not path or not os.path.isfile(path):
        return None
    if needs_conversion(path):
        path = convert_cached(path, os.path.join(cfg.OUTPUT_DIR, "converted_weights"))
    if not path.endswith(".pkl"):
        return None
    with open(path, "rb") as f:
        loaded = pickle.load(f, encoding="latin1")
    return loaded.get(AUTHOR) if isinstance(loaded, dict) else None


def config_from_weights(cfg):
    """Apply MODEL.RESNEXT.CONFIG_FROM_WEIGHTS to an unfrozen cfg.

    Returns one line per change (or why nothing changed), for the caller to log.
    """
    if not cfg.MODEL.RESNEXT.CONFIG_FROM_WEIGHTS:
        return []
    meta = weights_metadata(cfg)
    if meta is None:
        return [f"MODEL.RESNEXT.CONFIG_FROM_WEIGHTS: {cfg.MODEL.WEIGHTS!r} carries no "
                "resnext_det metadata; the config is kept as it is."]
    return [f"MODEL.RESNEXT.CONFIG_FROM_WEIGHTS: {key} {old!r} -> {new!r}"
            for key, old, new in apply_metadata(cfg, meta)]
