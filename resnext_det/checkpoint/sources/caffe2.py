"""Caffe2 Detectron ImageNet pickles (R-50.pkl, R-101.pkl, X-101-32x8d.pkl, X-101-64x4d.pkl).

A pickle of {"blobs": {name: ndarray}} or of {name: ndarray}. Blob names (the facts
detectron2/checkpoint/c2_model_loading.py also relies on):
  conv1_w, res_conv1_bn_{s,b}                     -> stem.conv1, stem.conv1.norm
  res{s}_{j}_branch2{a,b,c}_w, ..._bn_{s,b}       -> res{s}.{j}.conv{1,2,3}, .norm
  res{s}_{j}_branch1_w, res{s}_{j}_branch1_bn_{s,b} -> res{s}.{j}.shortcut, .shortcut.norm
  pred_{w,b} (Detectron) or fc1000_{w,b} (MSRA)   -> linear
  *_momentum                                      -> dropped (optimizer state)
The BN layers are stored folded into an affine map y = s * x + b (Caffe2's AffineChannel),
so they load into FrozenBN with running_mean 0 and running_var 1 - eps: detectron2's
FrozenBatchNorm2d initializes running_var to 1 - eps so that (var + eps) is exactly 1 and
the layer computes s * x + b exactly. Files that hold `_bn_rm` / `_bn_riv` keep them.

Stride placement and pixel scale are not in the file. Presets (the `preset` option):
  "msra": MSRA's R-50/R-101 (He et al.): stride in the 1x1, BGR 0-255 minus the mean,
          std 1 (detectron2 configs' defaults, STRIDE_IN_1X1 True).
  "fair": FAIR's X-101-32x8d.pkl used by detectron2's model zoo X101 configs:
          STRIDE_IN_1X1 False ("this is a C2 model"), PIXEL_STD [57.375, 57.120, 58.395].
Default: "msra" when C == 1, else "fair". Detectron (v1) X-101-64x4d.pkl configs set
STRIDE_1X1 False too but we did not verify their pixel std: pass an override if unsure.
"""
import re

import torch

from .base import CAFFE2_BGR, DROP, IMAGENET_BGR, Source

PRESETS = {
    "msra": dict(CAFFE2_BGR, stride_in_1x1=True),
    "fair": dict(IMAGENET_BGR, stride_in_1x1=False),
}
EPS = 1e-5  # detectron2 FrozenBatchNorm2d / torch BatchNorm2d default eps
_BLOCK = re.compile(r"^res(\d)_(\d+)_(branch2a|branch2b|branch2c|branch1)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_PART = {"branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3", "branch1": "shortcut"}
_PARAM = {"w": "weight", "bn_s": "norm.weight", "bn_b": "norm.bias",
          "bn_rm": "norm.running_mean", "bn_riv": "norm.running_var"}
_OTHER = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.conv1.norm.weight",
          "res_conv1_bn_b": "stem.conv1.norm.bias", "res_conv1_bn_rm": "stem.conv1.norm.running_mean",
          "res_conv1_bn_riv": "stem.conv1.norm.running_var", "pred_w": "linear.weight",
          "pred_b": "linear.bias", "fc1000_w": "linear.weight", "fc1000_b": "linear.bias"}


def rename_key(key):
    """A Caffe2 blob name -> ours (DROP for *_momentum, None if unknown)."""
    if key.endswith("_momentum"):
        return DROP
    if m := _BLOCK.match(key):
        return f"res{m[1]}.{m[2]}.{_PART[m[3]]}.{_PARAM[m[4]]}"
    return _OTHER.get(key)


def rename(state):
    return {key: rename_key(key) for key in state}


def add_identity_statistics(state):
    """Add running_mean 0 / running_var 1 - eps beside every norm that has only s, b."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith(".norm.weight"):
            prefix = key[: -len("weight")]
            out.setdefault(prefix + "running_mean", torch.zeros_like(value))
            out.setdefault(prefix + "running_var", torch.full_like(value, 1.0 - EPS))
    if "linear.weight" in out and out["linear.weight"].dim() == 4:  # some store fc as 1x1 conv
        out["linear.weight"] = out["linear.weight"].flatten(1)
    return out


def matches(state, wrapper):
    return "conv1_w" in state and "res2_0_branch2a_w" in state


def defaults(wrapper, template, preset=None):
    preset = preset or ("msra" if template.cardinality == 1 else "fair")
    if preset not in PRESETS:
        raise ValueError(f"caffe2 preset {preset!r} is not one of {sorted(PRESETS)}")
    return dict(PRESETS[preset], norm="FrozenBN",
                notes=f"caffe2 preset {preset!r}: stride placement and std are not stored in "
                      "the file; affine-only BN loads exactly as FrozenBN")


SOURCE = Source("caffe2", matches, rename, add_identity_statistics, defaults)
