"""Register the digits demo set at import, where detectron2 looks for datasets.

Like detectron2's builtin COCO names, "digits_train" and "digits_val" point at
$DETECTRON2_DATASETS/digits (default ./datasets/digits) as soon as resnext_det is
imported, so every process of a distributed run knows them; nothing is read until a
dataset is used. A missing build is reported by resnext_det.engine.check_datasets with
the command that makes it.
"""
import os

from .register import register_digits


def digits_root():
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "digits")


register_digits(digits_root())
