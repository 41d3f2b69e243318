"""Weights: reading any supported file safely, converting it, loading it into a model.

load_weights(path) is the one way in (read once, convert foreign formats, cache);
convert_weights(path) reads torchvision / timm / pycls / Caffe2 / Torch7 /
pretrainedmodels / our own files by content and returns our naming plus metadata;
save_converted writes the detectron2 .pkl; ResNeXtCheckpointer is detectron2's
checkpointer on top of load_weights, with strict ResNeXt keys and atomic saves.
Comparing a config with the metadata is config-side: resnext_det.config.weights.
"""
from .block_forms import convert_block_form, from_grouped, to_grouped
from .checkpointer import ResNeXtCheckpointer, WeightsMismatchError, trunk_keys
from .convert import ConversionReport, ConversionResult, convert_weights, save_converted
from .errors import ConversionError, KeyMismatchError
from .loading import LoadedWeights, cache_dir_for, load_weights
from .metadata import WeightsMetadata
from .readers import UnreadableFileError, WeightsFileError, read_weights, read_weights_file, sniff_container
from .template_infer import infer_template

__all__ = [
    "convert_block_form", "from_grouped", "to_grouped",
    "ResNeXtCheckpointer", "WeightsMismatchError", "trunk_keys",
    "ConversionReport", "ConversionResult", "convert_weights", "save_converted",
    "ConversionError", "KeyMismatchError",
    "LoadedWeights", "cache_dir_for", "load_weights",
    "WeightsMetadata",
    "UnreadableFileError", "WeightsFileError", "read_weights", "read_weights_file", "sniff_container",
    "infer_template",
]
