"""MODEL.WEIGHTS of any supported format, and MODEL.RESNEXT.CONFIG_FROM_WEIGHTS.

Both go through resnext_det.checkpoint.load_weights, which reads the file once: the
config step asks it to remember its result, and the checkpointer's load reuses it.
"""
from detectron2.utils.file_io import PathManager

from ..checkpoint import ResNeXtCheckpointer, cache_dir_for, load_weights
from ..checkpoint.checkpointer import local_copy
from ..config.weights import apply_metadata, check_config


def checkpointer_options(cfg):
    """The ResNeXtCheckpointer arguments that MODEL.RESNEXT.WEIGHTS_* select."""
    node = cfg.MODEL.RESNEXT
    return dict(cache_dir=cache_dir_for(cfg.OUTPUT_DIR), allow_partial=node.WEIGHTS_ALLOW_PARTIAL,
                trust_pickle=node.WEIGHTS_TRUST_PICKLE, block_form=node.BLOCK_FORM)


def build_checkpointer(cfg, model, **checkpointables):
    """The checkpointer of our tools: converts foreign weights on load, checks the config."""
    return ResNeXtCheckpointer(model, cfg.OUTPUT_DIR, on_metadata=lambda meta: check_config(cfg, meta),
                               **checkpointer_options(cfg), **checkpointables)


def config_from_weights(cfg):
    """Apply MODEL.RESNEXT.CONFIG_FROM_WEIGHTS to an unfrozen cfg.

    Returns one line per change (or why nothing changed), for the caller to log.
    """
    if not cfg.MODEL.RESNEXT.CONFIG_FROM_WEIGHTS or not cfg.MODEL.WEIGHTS:
        return []
    options = checkpointer_options(cfg)
    options.pop("block_form")  # the checkpointer regroups after the load
    if options.pop("allow_partial"):  # converted as the checkpointer will: one read for both
        options["allow_partial"] = True
    # a detectron2:// or https:// name, as the checkpointer resolves it (download, cache)
    local = local_copy(cfg.MODEL.WEIGHTS, PathManager) if "://" in cfg.MODEL.WEIGHTS \
        else cfg.MODEL.WEIGHTS
    meta = load_weights(local, remember=True, **options).metadata
    if meta is None:
        return [f"MODEL.RESNEXT.CONFIG_FROM_WEIGHTS: {cfg.MODEL.WEIGHTS!r} carries no "
                "resnext_det metadata; the config is kept as it is."]
    return [f"MODEL.RESNEXT.CONFIG_FROM_WEIGHTS: {key} {old!r} -> {new!r}"
            for key, old, new in apply_metadata(cfg, meta)]
