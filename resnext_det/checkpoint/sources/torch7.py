"""Torch7 .t7 models (read with `torchfile`): the ResNeXt release and fb.resnet.torch ResNets.

A key is the 0-based index path of a module in the saved nn.Sequential plus its field
("4.0.0.0.0.3.weight"). The ImageNet tree of facebookresearch/ResNeXt models/resnext.lua
and of fb.resnet.torch models/resnet.lua:
  nn.Sequential{ [0] conv 7x7, [1] BN, [2] ReLU, [3] max pool,
                 [4..7] nn.Sequential of blocks (res2..res5),
                 [8] avg pool, [9] nn.View, [10] nn.Linear }
  block = nn.Sequential{ [0] ConcatTable{ [0] main, [1] shortcut }, [1] CAddTable, [2] ReLU }
  shortcut = Sequential{ 1x1 conv, BN } where the width changes, else nn.Identity.
The main branch comes in three layouts:
  nested, the released resnext_{50_32x4d,101_32x4d,101_64x4d}.t7 (the module tree that
      pretrainedmodels/models/resnext_features/*.py was generated from shows it):
      Sequential{ Sequential{ 1x1, BN, ReLU, grouped 3x3, BN, ReLU }, 1x1, BN }
  flat, fb.resnet.torch ResNets and resnext.lua 'resnext_C':
      Sequential{ 1x1, BN, ReLU, 3x3, BN, ReLU, 1x1, BN }
  form (b), resnext.lua 'resnext_B': Sequential{ ConcatTable of C paths
      Sequential{ 1x1, BN, ReLU, 3x3, BN, ReLU }, JoinTable, 1x1, BN }
The names are decided by structure, not by fixed indices: the weighted modules of each
branch are taken in module order as (conv, BN) pairs; 3 pairs are conv1..conv3 (any
nesting), 2C + 1 pairs whose first 2C sit two by two in C sub-Sequentials are form (b).
fb.resnet.torch puts the stride in the 3x3 and trains on RGB in [0, 1] normalized by the
ImageNet mean/std (datasets/imagenet.lua there). Convolutions have no bias (ConvInit
removes it for cuDNN >= 4); a non-zero bias is an error. BN running statistics are
rewritten for eps 1e-5.
"""
import re

import numpy as np

from ..block_forms import to_grouped
from ..errors import ConversionError
from .base import DROP, IMAGENET_RGB, Source

EPS = 1e-5
_INDEX_PATH = re.compile(r"^\d+(\.\d+)*$")
_EXPECTED_MAIN = (
    "3 (conv, BN) pairs: 1x1, 3x3, 1x1, nested as released "
    "(Sequential{Sequential{1x1, BN, ReLU, 3x3, BN, ReLU}, 1x1, BN}) or flat "
    "(Sequential{1x1, BN, ReLU, 3x3, BN, ReLU, 1x1, BN}); or form (b): a ConcatTable of "
    "C >= 2 paths Sequential{1x1, BN, ReLU, 3x3, BN, ReLU}, JoinTable, 1x1, BN")


# ---------------------------------------------------------------- reading the .t7 tree
def _typename(module):
    """The Lua class name ('nn.SpatialConvolution'); latin-1 where it is not UTF-8 (a damaged
    file: a UnicodeDecodeError escaped), so that it is named as an unknown module."""
    name = module.torch_typename()
    if not isinstance(name, bytes):
        return name
    try:
        return name.decode()
    except UnicodeDecodeError:
        return name.decode("latin-1")


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
    """weight, bias, running_mean, running_var for eps 1e-5 (affine=false: 1 and 0)."""
    eps = float(_attr(module, "eps") or EPS)
    mean = _field(module, "running_mean")
    var = _field(module, "running_var")
    if var is None:  # old nn stored running_std = 1 / sqrt(var + eps)
        var = 1.0 / _field(module, "running_std") ** 2 - eps
    weight, bias = _field(module, "weight"), _field(module, "bias")
    return {f"{path}.weight": np.ones_like(mean) if weight is None else weight,
            f"{path}.bias": np.zeros_like(mean) if bias is None else bias,
            f"{path}.running_mean": mean, f"{path}.running_var": var + (eps - EPS)}


def _linear(module, path):
    return {f"{path}.weight": _field(module, "weight"), f"{path}.bias": _field(module, "bias")}


def flatten(model, path=""):
    """{index path: ndarray} of every conv, BN and linear in a torchfile module tree."""
    name = _typename(model)
    if name.endswith(("Convolution", "ConvolutionMM")):
        return _conv(model, path)
    if name.endswith("BatchNormalization"):
        return _batch_norm(model, path)
    if name.endswith("Linear"):
        return _linear(model, path)
    out = {}
    for i, child in enumerate(_attr(model, "modules") or []):
        out.update(flatten(child, f"{path}.{i}" if path else str(i)))
    return out


# ---------------------------------------------------------------- naming by structure
def _split_key(key, prefix):
    """'4.0.0.0.0.3.weight' -> ((4, 0, 0, 0, 0, 3), 'weight'); an error if not an index path."""
    module, _, field = str(key)[len(prefix):].rpartition(".")
    if not str(key).startswith(prefix) or not _INDEX_PATH.match(module):
        raise ConversionError(
            f"key {key!r} is not a Torch7 module index path: expected {prefix}<0-based "
            f"indices joined by dots>.<field>, e.g. {prefix}4.0.0.0.0.3.weight, as read from "
            f"a .t7 nn.Sequential")
    return tuple(int(i) for i in module.split(".")), field


def _kind(fields):
    """'BN', 'conv' (4-d weight), 'linear' (2-d weight) or '?' for one module's fields."""
    if "running_mean" in fields:
        return "BN"
    ndim = len(getattr(fields.get("weight"), "shape", ()))
    return {4: "conv", 2: "linear"}.get(ndim, "?")


def _modules(state, prefix):
    """[(index path, kind)] of the weighted modules, in module order."""
    fields = {}
    for key in state:
        path, field = _split_key(key, prefix)
        fields.setdefault(path, {})[field] = state[key]
    return [(path, _kind(f)) for path, f in sorted(fields.items())]


def _dotted(prefix, path):
    return prefix + ".".join(map(str, path))


def _found(modules, prefix, at_most=8):
    """'conv at 4.0.0.0.0.0, BN at 4.0.0.0.0.1, ...' for an error message."""
    shown = [f"{kind} at {_dotted(prefix, path)}" for path, kind in modules[:at_most]]
    more = f", ... ({len(modules)} weighted modules in all)" if len(modules) > at_most else ""
    return (", ".join(shown) or "no weighted module") + more


def _pairs(modules):
    """[(conv path, BN path)] of a branch, or None unless it is conv, BN, conv, BN, ..."""
    kinds = [kind for _, kind in modules]
    if len(kinds) % 2 or kinds[0::2] != ["conv"] * (len(kinds) // 2) or set(kinds[1::2]) - {"BN"}:
        return None
    return [(modules[i][0], modules[i + 1][0]) for i in range(0, len(modules), 2)]


def _main_parts(pairs):
    """Our names of the main branch's (conv, BN) pairs, or None if no layout fits."""
    if pairs is None:
        return None
    if len(pairs) == 3:  # nested (release) or flat: conv1, conv2, conv3 in module order
        return ["conv1", "conv2", "conv3"]
    main = pairs[-1][0][:-1]  # 1x1 and BN after the JoinTable sit in the main Sequential
    holders = [conv[:-1] for conv, _ in pairs[:-1]]  # the Sequential holding each pair
    c = len(holders) // 2
    if (c >= 2 and len(holders) == 2 * c and holders[0::2] == holders[1::2]
            and len(set(holders)) == c
            and all(len(h) > len(main) and h[:len(main)] == main for h in holders)):
        return [f"paths.{i}.conv{k}" for i in range(c) for k in (1, 2)] + ["conv3"]
    return None


def _branch_names(parts, pairs):
    names = {}
    for part, (conv, norm) in zip(parts, pairs):
        names[conv], names[norm] = part, f"{part}.norm"
    return names


def _block_error(prefix, block, ours, branch, found, expected):
    return ConversionError(
        f"Torch7 block {_dotted(prefix, block)} ({ours}): the {branch} has {found}; "
        f"expected {expected}")


def _block_names(prefix, block, ours, modules):
    """{module path: our name} for one residual block (modules: its weighted modules)."""
    outside = [(p, k) for p, k in modules if p[2] != 0 or p[3] not in (0, 1)]
    if outside:
        raise _block_error(prefix, block, ours, "block", _found(outside, prefix),
                           "weights only in [0] ConcatTable{[0] main, [1] shortcut}")
    main = [(p, k) for p, k in modules if p[3] == 0]
    shortcut = [(p, k) for p, k in modules if p[3] == 1]
    main_pairs, shortcut_pairs = _pairs(main), _pairs(shortcut)
    parts = _main_parts(main_pairs)
    if parts is None:
        raise _block_error(prefix, block, ours, "main branch", _found(main, prefix), _EXPECTED_MAIN)
    if shortcut_pairs is None or len(shortcut_pairs) > 1:
        raise _block_error(prefix, block, ours, "shortcut", _found(shortcut, prefix),
                           "nn.Identity or Sequential{1x1 conv, BN}")
    names = _branch_names(parts, main_pairs)
    names.update(_branch_names(["shortcut"], shortcut_pairs))
    return {path: f"{ours}.{name}" for path, name in names.items()}


def _top_names(prefix, top):
    """stem conv and BN, and the optional Linear, among the top-level weighted modules."""
    kinds = [kind for _, kind in top]
    if kinds not in (["conv", "BN"], ["conv", "BN", "linear"]):
        raise ConversionError(
            f"Torch7 model top level: found {_found(top, prefix)}; expected a stem conv and BN "
            f"before the 4 stages and at most one Linear after them")
    return dict(zip([path for path, _ in top], ["stem.conv1", "stem.conv1.norm", "linear"]))


def _stage_names(prefix, k, modules):
    """{module path: our name} for the blocks of the k-th stage (res{k+2})."""
    names, blocks = {}, {}
    for path, kind in modules:
        if len(path) < 5:  # stage, block, ConcatTable, branch, module
            raise ConversionError(
                f"Torch7 stage {_dotted(prefix, path[:1])} (res{k + 2}): found {kind} at "
                f"{_dotted(prefix, path)}; expected a Sequential of residual blocks")
        blocks.setdefault(path[:2], []).append((path, kind))
    for block, block_modules in blocks.items():
        names.update(_block_names(prefix, block, f"res{k + 2}.{block[1]}", block_modules))
    return names


def name_modules(state, prefix=""):
    """{index path tuple: our module name} of a ResNet / ResNeXt tree, decided by structure.

    Args:
        state: {prefix + index path + "." + field: array}, every key an index path.
        prefix: what precedes the index paths (pretrainedmodels: "features.").
    Raises ConversionError naming the module where the tree fits no known layout.
    """
    modules = _modules(state, prefix)
    names = _top_names(prefix, [(p, k) for p, k in modules if len(p) == 1])
    stages = sorted({p[0] for p, _ in modules if len(p) > 1})
    if len(stages) != 4:
        raise ConversionError(
            f"Torch7 model: found {len(stages)} stages of blocks at top-level indices "
            f"{[_dotted(prefix, (s,)) for s in stages]}; expected 4 (res2..res5 of an "
            f"ImageNet model, indices 4..7)")
    for k, stage in enumerate(stages):
        in_stage = [(p, kind) for p, kind in modules if p[0] == stage and len(p) > 1]
        names.update(_stage_names(prefix, k, in_stage))
    return names


def rename_index_paths(state, prefix=""):
    """{key: our key} for index-path keys (see `name_modules`)."""
    names = name_modules(state, prefix)
    return {key: f"{names[path]}.{field}"
            for key in state for path, field in [_split_key(key, prefix)]}


def rename(state):
    """Index paths -> ours; num_batches_tracked (a PyTorch copy of the tree) is dropped."""
    tracked = {key for key in state if str(key).endswith("num_batches_tracked")}
    names = rename_index_paths({k: v for k, v in state.items() if k not in tracked})
    return {key: DROP if key in tracked else names[key] for key in state}


def matches(state, wrapper):
    return "0.weight" in state and all(_INDEX_PATH.match(str(k).rpartition(".")[0]) for k in state)


def defaults(wrapper, template):
    return dict(IMAGENET_RGB, stride_in_1x1=False, norm="BN",
                notes="Torch7 (fb.resnet.torch / ResNeXt release): stride in the 3x3, RGB, "
                      "ImageNet mean/std")


SOURCE = Source(
    "torch7", matches, rename, to_grouped, defaults,  # form (b) 'resnext_B' -> (c)
    layout="index paths of the .t7 nn.Sequential: 0 conv, 1 BN, 4..7 stages of blocks "
           "{j}.0.{0: main, 1: shortcut}.*, 10 Linear; main nested (release), flat "
           "(fb.resnet.torch) or form (b)")
