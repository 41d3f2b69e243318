"""Caffe2 ImageNet pickles: Detectron's (R-50.pkl, X-101-64x4d.pkl, ...) and detectron2's.

A pickle of {name: ndarray} (ImageNet models; Python 2, protocol 2, read as latin1) or of
{"blobs": {name: ndarray}} (Detectron's trained models). Blob names, as
detectron2/checkpoint/c2_model_loading.py (convert_basic_c2_names) maps them:
  conv1_w, res_conv1_bn_*                          -> stem.conv1, stem.conv1.norm
  res{s}_{j}_branch2{a,b,c}_w, ..._bn_*            -> res{s}.{j}.conv{1,2,3}, .norm
  res{s}_{j}_branch1_w, res{s}_{j}_branch1_bn_*    -> res{s}.{j}.shortcut, .shortcut.norm
  _bn_s, _bn_b, _bn_rm, _bn_riv                    -> norm weight, bias, running_mean, running_var
  fc1000_{w,b} (MSRA) or pred_{w,b} (Detectron)    -> linear
Dropped, each with its reason in the report:
  *_momentum: optimizer state.
  {conv}_b of every convolution, all zeros: Detectron's tools/pickle_caffe_blobs.py
    (add_missing_biases) adds a zero bias to each Caffe convolution that has none,
    because Caffe2 convolutions need one; Detectron's ResNet.py (ConvAffine) and
    detectron2's resnet.py build those convolutions without a bias. A non-zero one is
    an error naming the blob: dropping it would change what the weights compute.
  conv1_b: MSRA's conv1 has a real bias, but Detectron (ResNet.py basic_bn_stem,
    no_bias=1) and detectron2 (BasicStem, bias=False) build conv1 without one and never
    load it; we drop it, so the converted weights compute what they compute there.

Two layouts (`variant`):
  "detectron":  BN folded into an affine y = s * x + b (_bn_s, _bn_b only), with eps 1e-5
      (pickle_caffe_blobs.py remove_spatial_bn_layers). It loads into FrozenBN with
      running_mean 0 and running_var 1 - eps: detectron2's FrozenBatchNorm2d initializes
      running_var so, making (var + eps) exactly 1 and the layer exactly s * x + b, as
      Detectron's AffineChannel.
  "detectron2": _bn_s, _bn_b plus _bn_rm, _bn_riv (detectron2's re-converted
      ImageNetPretrained/MSRA/R-*.pkl and FAIR/X-101-32x8d.pkl; its MODEL_ZOO.md: "we
      do not fuse BatchNorm into an affine layer"); the statistics are kept.

Stride placement and pixel std are not in the file; they follow from layout and C:
  C == 1 (MSRA's R-50 / R-101, both layouts): stride in the 1x1, BGR minus the mean, std 1
      (Detectron RESNETS.STRIDE_1X1 "True only for the original MSRA ResNet"; detectron2
      PIXEL_STD comment: "Detectron1 or any MSRA models ... std has been absorbed into its
      conv1 weights, so the std needs to be set 1").
  "detectron", C > 1 (X-101-32x8d, X-101-64x4d, X-152-32x8d-IN5k): stride in the 3x3
      (Detectron configs "STRIDE_1X1: False  # ... False for C2 or Torch models"), std 1
      (detectron2 checkpoint/catalog.py on these files: "all models here uses
      PIXEL_STD=[1,1,1]").
  "detectron2", C > 1 (FAIR/X-101-32x8d.pkl): stride in the 3x3, ImageNet std in BGR
      (detectron2 model zoo X_101_32x8d configs: PIXEL_STD [57.375, 57.120, 58.395],
      STRIDE_IN_1X1 False "this is a C2 model").
A `preset` ("msra" or "fair", tools/convert_weights.py --caffe2-preset) overrides them.
"""
import re

import torch

from .base import CAFFE2_BGR, IMAGENET_BGR, Dropped, Source, as_tensor
from ..errors import ConversionError

PRESETS = {
    "msra": dict(CAFFE2_BGR, stride_in_1x1=True),
    "fair": dict(IMAGENET_BGR, stride_in_1x1=False),
}
_DETECTRON_RESNEXT = dict(CAFFE2_BGR, stride_in_1x1=False)
EPS = 1e-5  # pickle_caffe_blobs.py folds BN with it; detectron2 FrozenBatchNorm2d default
_CONV = r"(?:conv1|res\d_\d+_branch(?:1|2a|2b|2c))"
_BLOCK = re.compile(r"^res(\d)_(\d+)_(branch2a|branch2b|branch2c|branch1)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_CONV_BIAS = re.compile(rf"^{_CONV}_b$")
_PART = {"branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3", "branch1": "shortcut"}
_PARAM = {"w": "weight", "bn_s": "norm.weight", "bn_b": "norm.bias",
          "bn_rm": "norm.running_mean", "bn_riv": "norm.running_var"}
_OTHER = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.conv1.norm.weight",
          "res_conv1_bn_b": "stem.conv1.norm.bias", "res_conv1_bn_rm": "stem.conv1.norm.running_mean",
          "res_conv1_bn_riv": "stem.conv1.norm.running_var", "pred_w": "linear.weight",
          "pred_b": "linear.bias", "fc1000_w": "linear.weight", "fc1000_b": "linear.bias"}
ZERO_BIAS = ("zero convolution bias: Detectron's tools/pickle_caffe_blobs.py adds one to every "
             "convolution that has none; Detectron and detectron2 build them without a bias")
CONV1_BIAS = ("conv1_b: MSRA's conv1 bias, which Detectron (ResNet.py basic_bn_stem, no_bias=1) "
              "and detectron2 (BasicStem, bias=False) build without and never load")
MOMENTUM = "optimizer momentum, not a weight"


def _conv_bias(key, value):
    """Dropped(reason) for a conv bias blob; ConversionError if it is not all zeros."""
    if key == "conv1_b":
        return Dropped(CONV1_BIAS)
    value = as_tensor(value)
    if value.count_nonzero():
        raise ConversionError(
            f"Caffe2 blob {key!r} is a non-zero convolution bias (max |b| = "
            f"{float(value.abs().max()):.3g}): Detectron's ResNet convolutions have no bias, "
            "and only zero ones (added by pickle_caffe_blobs.py) can be dropped without "
            "changing the network; this file is not a Detectron/detectron2 ImageNet ResNet")
    return Dropped(ZERO_BIAS)


def rename_key(key, value):
    """A Caffe2 blob (name, value) -> our name, Dropped(reason), or None if unknown."""
    if key.endswith("_momentum"):
        return Dropped(MOMENTUM)
    if _CONV_BIAS.match(key):
        return _conv_bias(key, value)
    if m := _BLOCK.match(key):
        return f"res{m[1]}.{m[2]}.{_PART[m[3]]}.{_PARAM[m[4]]}"
    return _OTHER.get(key)


def rename(state):
    return {key: rename_key(key, value) for key, value in state.items()}


def _fc_as_matrix(state):
    """linear.weight as (classes, features), linear.bias as (classes,): some store 4-D blobs."""
    out = dict(state)
    if "linear.weight" in out and out["linear.weight"].dim() > 2:
        out["linear.weight"] = out["linear.weight"].squeeze()
    if "linear.bias" in out:
        out["linear.bias"] = out["linear.bias"].reshape(-1)
    return out


def add_identity_statistics(state):
    """Folded files: running_mean 0 / running_var 1 - eps beside every norm (see above).

    Files with their own statistics keep them, and a norm without them is then a missing
    key, not a silent identity.
    """
    out = _fc_as_matrix(state)
    if any(key.endswith((".running_mean", ".running_var")) for key in state):
        return out
    for key, value in state.items():
        if key.endswith(".norm.weight"):
            prefix = key[: -len("weight")]
            out[prefix + "running_mean"] = torch.zeros_like(value)
            out[prefix + "running_var"] = torch.full_like(value, 1.0 - EPS)
    return out


def matches(state, wrapper):
    return "conv1_w" in state and "res2_0_branch2a_w" in state


def layout_variant(state, wrapper):
    """"detectron2" when the file keeps BN statistics (_bn_rm / _bn_riv), else "detectron"."""
    keeps = any(str(key).endswith(("_bn_rm", "_bn_riv")) for key in state)
    return "detectron2" if keeps else "detectron"


def layout_rule(layout, template):
    """(metadata, the rule that fired) for a file's layout and cardinality, see above."""
    if template.cardinality == 1:
        return PRESETS["msra"], (f"{layout} layout, C == 1: MSRA ResNet, stride in the 1x1, "
                                 "std 1 (MSRA's std is absorbed into conv1)")
    if layout == "detectron2":
        return PRESETS["fair"], ("detectron2 layout (_bn_rm/_bn_riv), C > 1: detectron2's "
                                 "FAIR X-101-32x8d.pkl, stride in the 3x3, ImageNet std "
                                 "(its model zoo configs)")
    return _DETECTRON_RESNEXT, ("detectron layout (BN folded into _bn_s/_bn_b), C > 1: "
                                "Detectron's FAIR ResNeXt, stride in the 3x3 (its configs' "
                                "STRIDE_1X1 False), std 1 (detectron2 catalog.py)")


def defaults(wrapper, template, preset=None, variant=None):
    """Metadata from the layout rule, or from `preset` when one is given.

    Args:
        variant: the file's layout, `layout_variant(state, wrapper)` (convert.py passes
            it); when not given it is read from wrapper["blobs"] if there is one, else
            "detectron" is assumed.
    """
    if variant is None:
        blobs = wrapper.get("blobs") if isinstance(wrapper, dict) else None
        variant = layout_variant(blobs or {}, wrapper)
    values, why = layout_rule(variant, template)
    if preset is not None:
        if preset not in PRESETS:
            raise ConversionError(f"caffe2 preset {preset!r} is not one of {sorted(PRESETS)}")
        values, why = PRESETS[preset], f"preset {preset!r} given, overriding the rule ({why})"
    bn = "BN statistics kept" if variant == "detectron2" else "affine-only BN loads exactly as FrozenBN"
    return dict(values, norm="FrozenBN", notes=f"caffe2: {why}; {bn}")


LAYOUT = ("conv1_w, res_conv1_bn_{s,b[,rm,riv]}, res{s}_{j}_branch{1,2a,2b,2c}_{w,bn_s,bn_b"
          "[,bn_rm,bn_riv]}, zero {conv}_b, fc1000_{w,b} or pred_{w,b}")
SOURCE = Source("caffe2", matches, rename, add_identity_statistics, defaults, layout=LAYOUT,
                variant=layout_variant)
