"""Datasets: the digits demo set (real handwritten digits for detection and classification).

Importing this package registers nothing. Register the demo set where it is used:

    from resnext_det.data import ensure_digits_dataset, register_digits
    ensure_digits_dataset("datasets/digits", num_train=2000, num_val=300)  # builds once, registers
    register_digits()  # or only register $DETECTRON2_DATASETS/digits, built earlier
    # now cfg.DATASETS.TRAIN = ("digits_train",), cfg.DATASETS.TEST = ("digits_val",)
"""
from .digits import DigitsSpec, build_digits_dataset, detection_paths, is_current, read_manifest
from .register import (DEFAULT_NAMES, digits_root, ensure_digits_dataset, register_digits,
                       register_digits_named_in)
from .source import DIGIT_CLASSES, load_source_digits, split_source

__all__ = [
    "DEFAULT_NAMES", "DIGIT_CLASSES", "digits_root", "DigitsSpec", "build_digits_dataset", "detection_paths",
    "ensure_digits_dataset", "is_current", "load_source_digits", "read_manifest",
    "register_digits", "register_digits_named_in", "split_source",
]
