"""What every weight source provides, and the pixel statistics they use.

A source turns the loaded object into {source key: tensor}, names each key in our
classifier naming (stem.conv1.*, res2.0.conv1.*, ..., linear.*), and states the input
convention its weights were trained with. Pixel statistics are in detectron2's
convention: 0-255 pixels in INPUT.FORMAT channel order, x' = (x - PIXEL_MEAN) / PIXEL_STD.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

DROP = "<dropped>"  # rename result: removed by a documented rule, not an error


class Dropped(str):
    """DROP, with the rule that dropped the key as `reason` (for the conversion report)."""

    def __new__(cls, reason):
        obj = super().__new__(cls, DROP)
        obj.reason = reason
        return obj


# torchvision / timm / fb.resnet.torch: RGB in [0, 1], mean (0.485, 0.456, 0.406), std
# (0.229, 0.224, 0.225); times 255 in detectron2's 0-255 convention.
IMAGENET_RGB = dict(input_format="RGB", pixel_mean=[123.675, 116.28, 103.53],
                    pixel_std=[58.395, 57.12, 57.375])
# The same statistics in BGR order: pycls feeds BGR (pycls/datasets/imagenet.py converts
# back to BGR after normalizing), detectron2's FAIR X-101-32x8d.pkl configs use these.
IMAGENET_BGR = dict(input_format="BGR", pixel_mean=[103.53, 116.28, 123.675],
                    pixel_std=[57.375, 57.12, 58.395])
# Caffe2 / MSRA: BGR 0-255 minus the mean, no division (detectron2's default config).
CAFFE2_BGR = dict(input_format="BGR", pixel_mean=[103.53, 116.28, 123.675],
                  pixel_std=[1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Source:
    """One weight format: detection, naming, and the input convention of its weights.

    Attributes:
        name: the format's name, stored in the metadata as `source_format`.
        matches: (state dict, wrapper) -> True when the keys are this format's.
        rename: state dict -> {source key: our key | DROP | None (unknown key)}.
        finish: our-named state dict -> state dict (e.g. add BN statistics).
        defaults: (wrapper, template) -> metadata defaults (input format, pixel stats,
            stride_in_1x1, norm, notes).
        layout: one line describing the key layout this source expects, e.g.
            "layer{i}.{j}.conv{k}.weight, layer{i}.{j}.downsample.0.weight, fc.weight";
            quoted in the error when a file's keys do not fit.
        variant: (state dict, wrapper) -> the name of the layout variant within this
            format that decides metadata (e.g. Caffe2 "detectron" vs "detectron2"), or None.
    """

    name: str
    matches: Callable
    rename: Callable
    finish: Callable
    defaults: Callable
    layout: str = ""
    variant: Callable = lambda state, wrapper: None


def rename_each(rename_key):
    """A `rename` that maps each key on its own."""
    return lambda state: {key: rename_key(key) for key in state}


def same_state(state):
    return state


def as_tensor(value):
    """numpy array / torch tensor / number -> a CPU torch tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
