"""Weight sources, tried in this order; the first whose keys match converts the file."""
from . import caffe2, pycls, resnext_det, torch7, torchvision
from .base import DROP, Source

SOURCES = (torchvision.SOURCE, pycls.SOURCE, caffe2.SOURCE, torch7.SOURCE, resnext_det.SOURCE)
SOURCE_NAMES = tuple(s.name for s in SOURCES)

__all__ = ["DROP", "SOURCES", "SOURCE_NAMES", "Source"]
