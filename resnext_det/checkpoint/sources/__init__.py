"""Weight sources, tried in this order; the first whose keys match converts the file.

Detection is unambiguous: torchvision needs conv1 + layer1.*, pycls stem.conv + s1.b1.*,
Caffe2 conv1_w + res2_0_*, torch7 only index-path keys ("0.weight", "4.0.0.0.0.0.weight"),
pretrainedmodels features.0 + features.4.0.0.*, resnext_det stem.conv1.* under any prefix.
"""
from . import caffe2, pretrainedmodels, pycls, resnext_det, torch7, torchvision
from .base import DROP, Source

SOURCES = (torchvision.SOURCE, pycls.SOURCE, caffe2.SOURCE, torch7.SOURCE, pretrainedmodels.SOURCE,
           resnext_det.SOURCE)
SOURCE_NAMES = tuple(s.name for s in SOURCES)

__all__ = ["DROP", "SOURCES", "SOURCE_NAMES", "Source"]
