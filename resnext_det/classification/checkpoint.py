"""Pretraining checkpoints: ResNeXtCheckpointer (atomic writes, newest-readable resume) plus
what an exact resume and a detector need.

Beyond the model and the trainer (iteration, optimizer, lr schedule) a checkpoint holds
`rng` (every process's RNG states), `classes`, `config`, and for ImageNet-style models
`matching_heuristics` and the `resnext_det` metadata, so that a detector's MODEL.WEIGHTS
may name it. model_final.pkl holds the weights alone in the converter's .pkl format.
"""
import logging

from ..checkpoint import ResNeXtCheckpointer, WeightsMetadata, save_converted
from ..checkpoint.convert import ConversionResult
from ..config.weights import check_config
from ..engine.weights import checkpointer_options

logger = logging.getLogger(__name__)


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
    convert = {"keep_fc": True}  # block form: the checkpointer's (MODEL.RESNEXT.BLOCK_FORM)
    return ResNeXtCheckpointer(model, cfg.OUTPUT_DIR, on_metadata=check, convert_kwargs=convert,
                               **checkpointer_options(cfg), **checkpointables)
