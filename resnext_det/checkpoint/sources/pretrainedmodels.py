"""Cadene's pretrainedmodels ResNeXt (resnext101_32x4d-29e315fa.pth, resnext101_64x4d-e77a0586.pth).

These are the Torch7 release's weights (resnext_101_{32,64}x4d.t7) in PyTorch: `features`
is an nn.Sequential generated module for module from the .t7 tree (pretrainedmodels 0.7.4,
pretrainedmodels/models/resnext_features/resnext101_32x4d_features.py), so a key is
"features." + the Torch7 index path, and the release's nested main branch shows:
  features.0, features.1               -> stem.conv1, stem.conv1.norm
  features.{4..7}.{j}.0.0.0.{0,1,3,4}  -> res{2..5}.{j}.conv1, .conv1.norm, .conv2, .conv2.norm
  features.{4..7}.{j}.0.0.{1,2}        -> res{2..5}.{j}.conv3, .conv3.norm
  features.{4..7}.{j}.0.1.{0,1}        -> res{2..5}.{j}.shortcut, .shortcut.norm
  last_linear                          -> linear
(features.{s}.{j} is a block, .0 its ConcatTable (LambdaMap), .0.0 the main branch,
.0.0.0 the Sequential nested in it, .0.1 the shortcut; sources/torch7.py names them by
structure.) The stride is in the
grouped 3x3: res3.0's is `nn.Conv2d(256,256,(3, 3),(2, 2),(1, 1),1,32)` (line 105 of
that file), its 1x1 has stride 1 (line 102). pretrained_settings in
pretrainedmodels/models/resnext.py: input_space RGB, input_range [0, 1], ImageNet
mean/std, i.e. IMAGENET_RGB in detectron2's 0-255 convention.
"""
import re

from ..block_forms import to_grouped
from . import torch7
from .base import DROP, IMAGENET_RGB, Source

_PREFIX = "features."
_LINEAR = re.compile(r"^last_linear\.(weight|bias)$")


def _rename_one(key, features):
    if key.endswith("num_batches_tracked"):
        return DROP
    if m := _LINEAR.match(key):
        return f"linear.{m[1]}"
    return features.get(key)


def rename(state):
    """features.* by the Torch7 structure, last_linear -> linear; other keys None (unknown)."""
    features = {k: v for k, v in state.items()
                if k.startswith(_PREFIX) and not k.endswith("num_batches_tracked")}
    names = torch7.rename_index_paths(features, prefix=_PREFIX) if features else {}
    return {key: _rename_one(key, names) for key in state}


def matches(state, wrapper):
    return "features.0.weight" in state and any(str(k).startswith("features.4.0.0.") for k in state)


def defaults(wrapper, template):
    return dict(IMAGENET_RGB, stride_in_1x1=False, norm="BN",
                notes="pretrainedmodels (the Torch7 ResNeXt release): stride in the 3x3, RGB, "
                      "ImageNet mean/std")


SOURCE = Source(
    "pretrainedmodels", matches, rename, to_grouped, defaults,
    layout="features.0 conv, features.1 BN, features.{4..7}.{j}.0.0.0.{0,1,3,4} conv1/BN/conv2/BN, "
           "features.{4..7}.{j}.0.0.{1,2} conv3/BN, features.{4..7}.{j}.0.1.{0,1} shortcut, "
           "last_linear")
