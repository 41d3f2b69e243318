"""The conventions a converted file's weights were trained with.

The metadata travels inside the converted .pkl under "resnext_det". Pixel statistics
are in detectron2's convention (0-255 pixels in INPUT.FORMAT order; x' = (x - mean) / std).
Comparing it with a config, or setting a config from it, is the config's business:
resnext_det/config/weights.py.
"""
import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional


def valid_pixel_stats(values, channels, positive):
    """Whether `values` are `channels` finite numbers, each > 0 if `positive` (stds: the
    model divides by them)."""
    return len(values) == channels and all(
        isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive)
        for v in values)


@dataclass
class WeightsMetadata:
    """What a config must agree with for converted weights to compute what they learned.

    Attributes:
        template: "X50_32x4d", read off the tensor shapes.
        source_format: torchvision (also timm), pycls, caffe2, torch7, pretrainedmodels or
            resnext_det.
        input_format: channel order of the input, "RGB" or "BGR" (None: unknown).
        pixel_mean, pixel_std: detectron2 MODEL.PIXEL_MEAN / PIXEL_STD (0-255 scale).
        stride_in_1x1: where the weights' blocks put the stride (MODEL.RESNETS.STRIDE_IN_1X1).
        norm: the norm the weights were trained with ("BN"), or "FrozenBN" for files that
            hold only an affine per channel (Caffe2).
        block_form: "a", "b" or "c" (MODEL.RESNEXT.BLOCK_FORM) of the stored keys.
        num_classes: classifier outputs when the fc was kept, else None.
        notes: how uncertain values were decided.
    """

    template: str
    source_format: str
    input_format: Optional[str] = None
    pixel_mean: Optional[List[float]] = None
    pixel_std: Optional[List[float]] = None
    stride_in_1x1: Optional[bool] = None
    norm: Optional[str] = None
    block_form: str = "c"
    num_classes: Optional[int] = None
    notes: str = field(default="")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
