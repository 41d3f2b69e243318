"""A config against the metadata of its weights: check (warn per key) or apply.

The metadata (resnext_det.checkpoint.WeightsMetadata) says what the weights were trained
with; `check_config` warns, one line per key, where a config disagrees; `apply_metadata`
sets the config from it (MODEL.RESNEXT.CONFIG_FROM_WEIGHTS).
"""
import functools
import logging
import operator

import numpy as np

from ..checkpoint.metadata import WeightsMetadata
from ..modeling.config_args import (PER_CHANNEL_NORMS, TEMPLATE_KEYS, resnext_node,
                                     resolve_template)
from ..modeling.templates import parse_template

logger = logging.getLogger(__name__)

# Config key -> metadata field, for the keys that are copied one to one.
_DIRECT = {"MODEL.RESNETS.STRIDE_IN_1X1": "stride_in_1x1", "INPUT.FORMAT": "input_format",
           "MODEL.PIXEL_MEAN": "pixel_mean", "MODEL.PIXEL_STD": "pixel_std"}


def _get(cfg, dotted):
    return functools.reduce(operator.getitem, dotted.split("."), cfg)


def _set(cfg, dotted, value):
    parent, _, last = dotted.rpartition(".")  # every key here has a parent node
    _get(cfg, parent)[last] = value


def _differs(config_value, weights_value):
    if isinstance(weights_value, (list, tuple)):
        return not np.allclose(list(config_value), weights_value, atol=1e-3)
    return config_value != weights_value


def _norm_family(norm):
    return "BN" if norm in PER_CHANNEL_NORMS else norm


def _template_warnings(cfg, meta):
    wanted, found = parse_template(meta.template), resolve_template(cfg)
    if wanted == found:
        return []
    if resnext_node(cfg).TEMPLATE:
        return [("MODEL.RESNEXT.TEMPLATE", resnext_node(cfg).TEMPLATE, meta.template)]
    return [(f"MODEL.RESNETS.{key}", getattr(found, attr), getattr(wanted, attr))
            for key, attr in TEMPLATE_KEYS.items() if getattr(found, attr) != getattr(wanted, attr)]


def config_mismatches(cfg, meta):
    """[(config key, config value, weights' value)] where `cfg` disagrees with `meta`."""
    meta = meta if isinstance(meta, WeightsMetadata) else WeightsMetadata.from_dict(meta)
    found = _template_warnings(cfg, meta)
    for key, attr in _DIRECT.items():
        value = getattr(meta, attr)
        if value is not None and _differs(_get(cfg, key), value):
            found.append((key, _get(cfg, key), value))
    norm = cfg.MODEL.RESNETS.NORM
    if meta.norm is not None and _norm_family(norm) != _norm_family(meta.norm):
        found.append(("MODEL.RESNETS.NORM", norm, meta.norm))
    form = resnext_node(cfg).BLOCK_FORM
    if form != meta.block_form:
        found.append(("MODEL.RESNEXT.BLOCK_FORM", form, meta.block_form))
    return found


def check_config(cfg, meta, log=True):
    """One-line warnings naming key, config value and weights' value; logged if `log`."""
    meta = meta if isinstance(meta, WeightsMetadata) else WeightsMetadata.from_dict(meta)
    lines = [f"{key}={value!r} but the {meta.source_format} weights ({meta.template}) were "
             f"trained with {wanted!r}" for key, value, wanted in config_mismatches(cfg, meta)]
    for line in lines if log else ():
        logger.warning(line)
    return lines


def apply_metadata(cfg, meta):
    """Set template, stride, input format, pixel stats and block form from `meta`.

    MODEL.RESNETS.NORM is left alone: detection chooses FrozenBN/SyncBN for BN-trained
    weights itself. Unknown (None) values are left alone. Returns the
    [(key, old value, new value)] it changed; `cfg` must not be frozen.
    """
    meta = meta if isinstance(meta, WeightsMetadata) else WeightsMetadata.from_dict(meta)
    template = parse_template(meta.template)
    wanted = {f"MODEL.RESNETS.{k}": getattr(template, a) for k, a in TEMPLATE_KEYS.items()}
    wanted.update({k: getattr(meta, a) for k, a in _DIRECT.items()})
    if "RESNEXT" in cfg.MODEL:
        wanted.update({"MODEL.RESNEXT.TEMPLATE": meta.template,
                       "MODEL.RESNEXT.BLOCK_FORM": meta.block_form})
    changed = []
    for key, value in wanted.items():
        if value is not None and _differs(_get(cfg, key), value):
            changed.append((key, _get(cfg, key), value))
            _set(cfg, key, list(value) if isinstance(value, (list, tuple)) else value)
    return changed
