"""Digits images to run the exported detectors on."""
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper

from resnext_det.data import register_digits
from tests.export.helpers import tiny_cfg


@pytest.fixture(scope="session")
def digits_inputs(datasets_root):
    """Three test inputs as detectron2's DatasetMapper makes them: two 64x64 digits images and
    the two side by side (64x128), a size the traces never saw, whose detections are asked
    for at half size (as for a picture that the mapper had resized x2)."""
    register_digits(datasets_root / "digits")
    mapper = DatasetMapper(tiny_cfg("faster_rcnn"), is_train=False)
    a, b = (mapper(record) for record in DatasetCatalog.get("digits_val")[:2])
    wide = torch.cat([a["image"], b["image"]], dim=2)
    return [a, b, {"image": wide, "height": 32, "width": 64}]
