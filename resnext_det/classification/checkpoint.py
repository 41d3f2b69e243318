"""Pretraining checkpoints: ResNeXtCheckpointer (atomic writes, newest-readable resume) plus
what an exact resume and a detector need.

Beyond the model and the trainer (iteration, optimizer, lr schedule) a checkpoint holds
`rng` (every process's RNG states), `classes`, `config`, and for ImageNet-style models
`matching_heuristics` and the `resnext_det` metadata, so that a detector's MODEL.WEIGHTS
may name it. model_final.pkl holds the weights alone in the converter's .pkl format.
"""
import logging
import random

import numpy as np
import torch
from detectron2.engine import hooks
from detectron2.utils import comm

from ..checkpoint import ResNeXtCheckpointer, WeightsMetadata, save_converted
from ..checkpoint.convert import ConversionResult
from ..config.weights import check_config
from ..engine.weights import checkpointer_options

logger = logging.getLogger(__name__)


def rng_state():
    """torch / CUDA / numpy / python RNG states, in types torch.load(weights_only=True) reads."""
    kind, keys, *rest = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(checkpoint_extra):
    """This process's RNG states from a resumed checkpoint, if the process count is the same."""
    states = checkpoint_extra.get("rng") or []
    if len(states) != comm.get_world_size():
        logger.warning(f"RNG states of {len(states)} processes in the checkpoint, "
                       f"{comm.get_world_size()} now: augmentations differ from the first run's")
    else:
        set_rng_state(states[comm.get_rank()])


def weights_metadata(cfg, template, num_classes, iteration):
    """What a detector loading these weights checks its config against."""
    r = cfg.MODEL.RESNETS
    return WeightsMetadata(
        template=template, source_format="resnext_det", input_format=cfg.INPUT.FORMAT,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD),
        stride_in_1x1=r.STRIDE_IN_1X1, norm=r.NORM, block_form=cfg.MODEL.RESNEXT.BLOCK_FORM,
        num_classes=num_classes,
        notes=(f"tools/pretrain_cls.py on {cfg.DATA.NAME}:{cfg.DATA.ROOT}, iteration {iteration}; "
               f"STEM_OUT_CHANNELS {r.STEM_OUT_CHANNELS}, RES2_OUT_CHANNELS {r.RES2_OUT_CHANNELS}"))


def save_detection_weights(path, model, metadata):
    """model_final.pkl (atomically): numpy weights + metadata, a detector's MODEL.WEIGHTS."""
    save_converted(ConversionResult(model.state_dict(), metadata, None), path)
    logger.info(f"Detection weights: {path} (MODEL.WEIGHTS of a detector with "
                f"MODEL.RESNEXT.TEMPLATE {metadata.template!r})")


def build_cls_checkpointer(cfg, model, **checkpointables):
    """ResNeXtCheckpointer for a classifier: MODEL.WEIGHTS of any format, classifier layer kept
    (left as initialized when its shape differs, logged); ResNeXt keys must fit."""
    check = (lambda meta: check_config(cfg, meta)) if cfg.MODEL.ARCH == "imagenet" else None
    convert = {"keep_fc": True, "block_form": cfg.MODEL.RESNEXT.BLOCK_FORM}
    return ResNeXtCheckpointer(model, cfg.OUTPUT_DIR, on_metadata=check, convert_kwargs=convert,
                               **checkpointer_options(cfg), **checkpointables)


class ResumableCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's PeriodicCheckpointer, registered on every process: when a checkpoint is
    due, all processes gather their RNG states and the main process saves them with it.

    Args:
        extra (callable): iteration -> dict of more data to save.
    """

    def __init__(self, checkpointer, period, extra, max_to_keep=None):
        super().__init__(checkpointer, period, max_to_keep=max_to_keep)
        self.extra = extra

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.max_iter - 1:
            rng = comm.all_gather(rng_state())
            if comm.is_main_process():
                self.step(it, rng=rng, **self.extra(it))
