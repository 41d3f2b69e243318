"""torchvision's ResNet / ResNeXt naming, which timm's resnet50 / resnext50_32x4d share.

  conv1, bn1                                   -> stem.conv1, stem.conv1.norm
  layer{i}.{j}.conv{k}, .bn{k}                 -> res{i+1}.{j}.conv{k}, .conv{k}.norm
  layer{i}.{j}.downsample.0, .downsample.1     -> res{i+1}.{j}.shortcut, .shortcut.norm
  fc                                           -> linear
torchvision's Bottleneck puts the stride in the 3x3 (conv2), "ResNet V1.5", and so does
timm's (timm/models/resnet.py); both train on RGB in [0, 1] normalized by the ImageNet
mean/std. timm variants with other stems or attention (resnet50d, seresnext) have other
keys and fail the conversion with the unknown keys named.
"""
import re

from .base import DROP, IMAGENET_RGB, Source, rename_each, same_state

_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(\w+)$")
_STEM = re.compile(r"^(conv1|bn1)\.(\w+)$")
_FC = re.compile(r"^fc\.(weight|bias)$")
_PART = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "bn1": "conv1.norm",
         "bn2": "conv2.norm", "bn3": "conv3.norm", "downsample.0": "shortcut",
         "downsample.1": "shortcut.norm"}


def rename_key(key):
    """A torchvision key -> ours (DROP for num_batches_tracked, None if unknown)."""
    if key.endswith("num_batches_tracked"):
        return DROP
    if m := _STEM.match(key):
        return f"stem.{'conv1' if m[1] == 'conv1' else 'conv1.norm'}.{m[2]}"
    if m := _BLOCK.match(key):
        return f"res{int(m[1]) + 1}.{m[2]}.{_PART[m[3]]}.{m[4]}"
    if m := _FC.match(key):
        return f"linear.{m[1]}"
    return None


def matches(state, wrapper):
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def defaults(wrapper, template):
    return dict(IMAGENET_RGB, stride_in_1x1=False, norm="BN",
                notes="torchvision/timm naming: stride in the 3x3, RGB, ImageNet mean/std")


SOURCE = Source("torchvision", matches, rename_each(rename_key), same_state, defaults,
                layout="conv1, bn1, layer{1-4}.{j}.conv{1-3} / bn{1-3} / downsample.{0,1}, fc")
