"""Checkpoint conversion: block forms, foreign weight formats, metadata, loading.

convert_weights(path) reads torchvision / timm / pycls / Caffe2 / Torch7 / our own
files by content and returns our naming plus metadata; save_converted writes the
detectron2 .pkl; check_config / apply_metadata compare or set a config from it;
ResNeXtCheckpointer lets MODEL.WEIGHTS point at any supported file.
"""
from .block_forms import convert_block_form, from_grouped, to_grouped
from .checkpointer import ResNeXtCheckpointer, convert_cached
from .convert import ConversionReport, ConversionResult, convert_weights, save_converted
from .errors import ConversionError, KeyMismatchError
from .metadata import WeightsMetadata, apply_metadata, check_config, config_mismatches
from .readers import read_weights_file, sniff_container
from .template_infer import infer_template

__all__ = [
    "convert_block_form", "from_grouped", "to_grouped",
    "ResNeXtCheckpointer", "convert_cached",
    "ConversionReport", "ConversionResult", "convert_weights", "save_converted",
    "ConversionError", "KeyMismatchError",
    "WeightsMetadata", "apply_metadata", "check_config", "config_mismatches",
    "read_weights_file", "sniff_container", "infer_template",
]
