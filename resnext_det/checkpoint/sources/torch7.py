"""The original Torch7 release of ResNeXt (facebookresearch/ResNeXt, .t7 via `torchfile`).

Assumed structure, from models/resnext.lua of that repository (ImageNet branch):
  nn.Sequential{ [0] conv 7x7, [1] BN, [2] ReLU, [3] max pool,
                 [4..7] nn.Sequential of blocks (res2..res5),
                 [8] avg pool, [9] nn.View, [10] nn.Linear }
  block j = nn.Sequential{ [0] ConcatTable{ [0] main, [1] shortcut }, [1] CAddTable, [2] ReLU }
  main, form (c): Sequential{ [0] 1x1, [1] BN, [2] ReLU, [3] grouped 3x3, [4] BN, [5] ReLU,
                              [6] 1x1, [7] BN }
  main, form (b): Sequential{ [0] ConcatTable of C paths Sequential{ [0] 1x1, [1] BN,
                              [2] ReLU, [3] 3x3, [4] BN, [5] ReLU }, [1] JoinTable,
                              [2] 1x1, [3] BN }
  shortcut: Sequential{ [0] 1x1 conv, [1] BN } where the width changes, else Identity.
Module paths are 0-based indices joined by dots ("4.0.0.0.3.weight"). fb.resnet.torch puts
the stride in the 3x3 and trains on RGB in [0, 1] normalized by the ImageNet mean/std
(datasets/imagenet.lua there). Convolutions have no bias (ConvInit removes it for cuDNN
>= 4); a non-zero bias is an error. BN running statistics are rewritten for eps 1e-5.
"""
import re

import numpy as np

from ..errors import ConversionError
from .base import IMAGENET_RGB, Source

EPS = 1e-5
_STEM = {"0": "stem.conv1", "1": "stem.conv1.norm", "10": "linear"}
_MAIN_C = {"0": "conv1", "1": "conv1.norm", "3": "conv2", "4": "conv2.norm", "6": "conv3",
           "7": "conv3.norm"}
_PATH_B = {"0": "conv1", "1": "conv1.norm", "3": "conv2", "4": "conv2.norm"}
_MAIN_B = {"2": "conv3", "3": "conv3.norm"}
_SHORTCUT = {"0": "shortcut", "1": "shortcut.norm"}
_BLOCK = re.compile(r"^([4-7])\.(\d+)\.0\.([01])\.(.+)\.(\w+)$")
_FORM_B = re.compile(r"^([4-7]\.\d+)\.0\.0\.0\.\d+\.\d\.\w+$")


def _typename(module):
    name = module.torch_typename()
    return name.decode() if isinstance(name, bytes) else name


def _attr(module, name):
    """A field of a torchfile TorchObject (an empty field table is read as a list)."""
    fields = module._obj
    if not isinstance(fields, dict):
        return None
    return fields.get(name.encode(), fields.get(name))


def _field(module, name):
    value = _attr(module, name)
    return None if value is None else np.asarray(value)


def _conv(module, path):
    groups = int(_attr(module, "groups") or 1)
    shape = (int(_attr(module, "nOutputPlane")), int(_attr(module, "nInputPlane")) // groups,
             int(_attr(module, "kH")), int(_attr(module, "kW")))
    bias = _field(module, "bias")
    if bias is not None and bias.size and np.abs(bias).max() > 0:
        raise ConversionError(f"{path}.bias: non-zero convolution bias; our convs have none")
    return {f"{path}.weight": _field(module, "weight").reshape(shape)}


def _batch_norm(module, path):
    eps = float(_attr(module, "eps") or EPS)
    out = {f"{path}.weight": _field(module, "weight"), f"{path}.bias": _field(module, "bias"),
           f"{path}.running_mean": _field(module, "running_mean")}
    var = _field(module, "running_var")
    if var is None:  # old nn stored running_std = 1 / sqrt(var + eps)
        var = 1.0 / _field(module, "running_std") ** 2 - eps
    out[f"{path}.running_var"] = var + (eps - EPS)
    return out


def _linear(module, path):
    return {f"{path}.weight": _field(module, "weight"), f"{path}.bias": _field(module, "bias")}


def flatten(model, path=""):
    """{index path: ndarray} of every conv, BN and linear in a torchfile module tree."""
    name = _typename(model)
    if name.endswith("Convolution"):
        return _conv(model, path)
    if name.endswith("BatchNormalization"):
        return _batch_norm(model, path)
    if name.endswith("Linear"):
        return _linear(model, path)
    out = {}
    for i, child in enumerate(_attr(model, "modules") or []):
        out.update(flatten(child, f"{path}.{i}" if path else str(i)))
    return out


def _block_part(branch, inner, form_b):
    module, _, param = inner.rpartition(".")
    if branch == "1":
        part = _SHORTCUT.get(module)
    elif form_b and (m := re.match(r"^0\.(\d+)\.(\d)$", module)):  # path i of form (b)
        part = _PATH_B.get(m[2]) and f"paths.{m[1]}.{_PATH_B[m[2]]}"
    else:  # main [3] is the grouped 3x3 in form (c) but the last BN in form (b)
        part = (_MAIN_B if form_b else _MAIN_C).get(module)
    return part and f"{part}.{param}"


def rename_key(key, form_b=False):
    """An index path -> ours (None if the structure is not the assumed one)."""
    if m := _BLOCK.match(key):
        part = _block_part(m[3], f"{m[4]}.{m[5]}", form_b)
        return part and f"res{int(m[1]) - 2}.{m[2]}.{part}"
    module, _, param = key.rpartition(".")
    return f"{_STEM[module]}.{param}" if module in _STEM else None


def rename(state):
    """Blocks whose main branch starts with a ConcatTable of paths are form (b)."""
    form_b = {m[1] for k in state if (m := _FORM_B.match(k))}
    return {k: rename_key(k, _block_id(k) in form_b) for k in state}


def _block_id(key):
    m = _BLOCK.match(key)
    return m and f"{m[1]}.{m[2]}"


def to_grouped_form(state):
    """Form (b) paths.i.* (Torch7 'resnext_B') -> form (c); form (c) unchanged."""
    from ..block_forms import to_grouped

    return to_grouped(state)


def matches(state, wrapper):
    return "0.weight" in state and any(str(k).startswith("4.0.0.0.") for k in state)


def defaults(wrapper, template):
    return dict(IMAGENET_RGB, stride_in_1x1=False, norm="BN",
                notes="fb.resnet.torch ResNeXt: stride in the 3x3, RGB, ImageNet mean/std")


SOURCE = Source("torch7", matches, rename, to_grouped_form, defaults)
