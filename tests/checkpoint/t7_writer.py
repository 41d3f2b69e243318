"""Torch7 .t7 files written from a PyTorch module tree, one module to one Lua module.

The structure of a written file is the structure of the torch tree it comes from (for
the ResNeXt release: pretrainedmodels' `features`, itself generated module for module
from the released .t7), never our converter's belief of it. Each torch module becomes
the Lua class the release used (facebookresearch/ResNeXt models/resnext.lua: cudnn
convolutions and ReLUs, nn batch norms), with the fields `torchfile` reads back.
"""
import struct

import numpy as np
import torch
from torch import nn


class T7Module:
    """A torch class instance to serialize: its class name and its field table."""

    def __init__(self, name, **fields):
        self.name, self.fields = name, fields


class T7Writer:
    """The Torch7 binary format (torch7 File.lua writeObject), as torchfile reads it."""

    def __init__(self, f):
        self.f, self.index = f, 0

    def _int(self, v):
        self.f.write(struct.pack("<i", v))

    def _long(self, v):
        self.f.write(struct.pack("<q", v))

    def _str(self, s):
        data = s if isinstance(s, bytes) else s.encode()  # bytes: a damaged file's names
        self._int(len(data))
        self.f.write(data)

    def _new_index(self):
        self.index += 1
        self._int(self.index)

    def _torch_header(self, class_name):
        self._int(4)
        self._new_index()
        self._str("V 1")
        self._str(class_name)

    def _tensor(self, array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        self._torch_header("torch.FloatTensor")
        self._int(array.ndim)
        for size in array.shape:
            self._long(size)
        for stride in (s // 4 for s in array.strides):
            self._long(stride)
        self._long(1)  # 1-based storage offset
        self._torch_header("torch.FloatStorage")
        self._long(array.size)
        self.f.write(array.tobytes())

    def _table(self, items):
        self._int(3)
        self._new_index()
        self._int(len(items))
        for k, v in items:
            self.write(k)
            self.write(v)

    def write(self, obj):
        if obj is None:
            self._int(0)
        elif isinstance(obj, bool):
            self._int(5)
            self._int(int(obj))
        elif isinstance(obj, (int, float)):
            self._int(1)
            self.f.write(struct.pack("<d", float(obj)))
        elif isinstance(obj, str):
            self._int(2)
            self._str(obj)
        elif isinstance(obj, (np.ndarray, torch.Tensor)):
            self._tensor(np.asarray(obj.detach() if isinstance(obj, torch.Tensor) else obj))
        elif isinstance(obj, list):
            self._table([(i + 1, v) for i, v in enumerate(obj)])
        elif isinstance(obj, dict):
            self._table(list(obj.items()))
        elif isinstance(obj, T7Module):
            self._torch_header(obj.name)
            self._table(list(obj.fields.items()))
        else:
            raise TypeError(type(obj))


def write_t7(path, tree):
    """Serialize a T7Module tree to `path`."""
    with open(path, "wb") as f:
        T7Writer(f).write(tree)
    return path


# ------------------------------------------------------------ Lua table modules in torch
class ConcatTable(nn.Sequential):
    """nn.ConcatTable: every child on the same input, a list of their outputs."""

    def forward(self, x):
        return [module(x) for module in self]


class JoinTable(nn.Module):
    """nn.JoinTable(2): concatenate a list of (N, C_i, H, W) along channels."""

    def forward(self, xs):
        return torch.cat(xs, 1)


class CAddTable(nn.Module):
    """nn.CAddTable: the sum of a list of tensors."""

    def forward(self, xs):
        return sum(xs[1:], xs[0])


# ------------------------------------------------------------ torch module -> Lua module
def _conv(m):
    return T7Module("cudnn.SpatialConvolution", weight=m.weight, nInputPlane=m.in_channels,
                    nOutputPlane=m.out_channels, kW=m.kernel_size[1], kH=m.kernel_size[0],
                    dW=m.stride[1], dH=m.stride[0], padW=m.padding[1], padH=m.padding[0],
                    groups=m.groups, **({} if m.bias is None else {"bias": m.bias}))


def _batch_norm(m):
    return T7Module("nn.SpatialBatchNormalization", weight=m.weight, bias=m.bias,
                    running_mean=m.running_mean, running_var=m.running_var, eps=m.eps,
                    momentum=m.momentum, affine=m.affine)


def _pool(name):
    def make(m):
        k, s, p = (v if isinstance(v, (tuple, list)) else (v, v)
                   for v in (m.kernel_size, m.stride, m.padding))
        return T7Module(name, kW=k[1], kH=k[0], dW=s[1], dH=s[0], padW=p[1], padH=p[0])
    return make


def _container(name):
    return lambda m: T7Module(name, modules=[to_t7(child) for child in m.children()])


def _leaf(name):
    def make(m):
        assert not list(m.children()), f"{type(m).__name__} with children is not a {name}"
        return T7Module(name)
    return make


# By class name: pretrainedmodels defines its own Lambda* classes in each generated file
# (LambdaMap = ConcatTable, LambdaReduce(x + y) = CAddTable, Lambda(x) = Identity there).
_LUA = {
    "Sequential": _container("nn.Sequential"), "LambdaMap": _container("nn.ConcatTable"),
    "ConcatTable": _container("nn.ConcatTable"), "LambdaReduce": _leaf("nn.CAddTable"),
    "CAddTable": _leaf("nn.CAddTable"),
    "JoinTable": lambda m: T7Module("nn.JoinTable", dimension=2),
    "Lambda": _leaf("nn.Identity"), "Identity": _leaf("nn.Identity"),
    "Conv2d": _conv, "BatchNorm2d": _batch_norm, "ReLU": lambda m: T7Module("cudnn.ReLU"),
    "MaxPool2d": _pool("nn.SpatialMaxPooling"), "AvgPool2d": _pool("cudnn.SpatialAveragePooling"),
    "Flatten": lambda m: T7Module("nn.View"),
    "Linear": lambda m: T7Module("nn.Linear", weight=m.weight, bias=m.bias),
}


def to_t7(module):
    """The T7Module tree of a torch module tree (classes in _LUA only)."""
    name = type(module).__name__
    if name not in _LUA:
        raise TypeError(f"no Lua class for torch module {name}")
    return _LUA[name](module)
