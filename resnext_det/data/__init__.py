"""Datasets: the digits demo set (real handwritten digits for detection and classification).

    from resnext_det.data import ensure_digits_dataset
    ensure_digits_dataset("datasets/digits", num_train=2000, num_val=300)  # builds once
    # now cfg.DATASETS.TRAIN = ("digits_train",), cfg.DATASETS.TEST = ("digits_val",)
"""
from . import builtin as _builtin  # registers digits_train / digits_val
from .builtin import digits_root
from .digits import DigitsSpec, build_digits_dataset, detection_paths, is_current, read_manifest
from .register import DEFAULT_NAMES, ensure_digits_dataset, register_digits
from .source import DIGIT_CLASSES, load_source_digits, split_source

__all__ = [
    "DEFAULT_NAMES", "DIGIT_CLASSES", "digits_root", "DigitsSpec", "build_digits_dataset", "detection_paths",
    "ensure_digits_dataset", "is_current", "load_source_digits", "read_manifest",
    "register_digits", "split_source",
]
