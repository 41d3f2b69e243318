"""Datasets: the digits demo set (real handwritten digits for detection and classification).

Importing this package registers nothing. Register the demo set where it is used (a
user's own COCO json: register_coco_json, the tools' `--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR`):

    from resnext_det.data import ensure_digits_dataset, register_digits
    ensure_digits_dataset("datasets/digits", num_train=2000, num_val=300)  # builds once, registers
    register_digits()  # or only register $DETECTRON2_DATASETS/digits, built earlier
    # now cfg.DATASETS.TRAIN = ("digits_train",), cfg.DATASETS.TEST = ("digits_val",)
"""
from .coco_json import (add_dataset_argument, check_coco_json, parse_dataset_arg, register_coco_json,
                        register_dataset_args)
from .digits import DigitsSpec, build_digits_dataset, detection_paths, is_current, read_manifest
from .register import (DEFAULT_NAMES, digits_root, ensure_digits_dataset, register_digits,
                       register_digits_named_in)
from .source import DIGIT_CLASSES, load_source_digits, split_source

__all__ = [
    "DEFAULT_NAMES", "DIGIT_CLASSES", "add_dataset_argument", "check_coco_json", "digits_root",
    "DigitsSpec", "build_digits_dataset", "detection_paths",
    "ensure_digits_dataset", "is_current", "load_source_digits", "parse_dataset_arg", "read_manifest",
    "register_coco_json", "register_dataset_args", "register_digits", "register_digits_named_in",
    "split_source",
]
