"""Helpers of the checkpoint tests: models, BN statistics, fixture writers, comparisons."""
import pickle
import struct

import numpy as np
import torch

from resnext_det.modeling import build_resnext, resnext_classifier
from tests.helpers import randomize_

FEATURES = ["res2", "res3", "res4", "res5"]
TINY = "X50_2x4d"  # the smallest template that is still a real ResNeXt-50 layout


def randomize_norms(model, seed=0):
    """Non-trivial norm statistics and affines (tests.helpers.randomize_), in eval mode."""
    return randomize_(model, seed).eval()


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def load_pkl(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def load_ours(model, weights):
    """Load our-named weights (numpy or torch); only num_batches_tracked may be missing."""
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    assert not missing and not result.unexpected_keys, (missing, result.unexpected_keys)
    return model.eval()


def ours_classifier(template, weights, **kwargs):
    return load_ours(resnext_classifier(template, **kwargs), weights)


def ours_backbone(template, weights, **kwargs):
    from resnext_det import parse_template

    net = build_resnext(parse_template(template), out_features=FEATURES, **kwargs)
    return load_ours(net, {k: v for k, v in weights.items() if not k.startswith("linear.")})


# ---------------------------------------------------------------- foreign naming writers
def to_pycls(state):
    """Our classifier naming -> pycls (stem.conv, s1.b1.f.a, s1.b1.proj, head.fc)."""
    part = {"conv1": "f.a", "conv2": "f.b", "conv3": "f.c", "conv1.norm": "f.a_bn",
            "conv2.norm": "f.b_bn", "conv3.norm": "f.c_bn", "shortcut": "proj",
            "shortcut.norm": "bn"}
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module.startswith("stem"):
            new = {"stem.conv1": "stem.conv", "stem.conv1.norm": "stem.bn"}[module]
        elif module == "linear":
            new = "head.fc"
        else:
            stage, block, rest = module.split(".", 2)
            new = f"s{int(stage[3]) - 1}.b{int(block) + 1}.{part[rest]}"
        out[f"{new}.{param}"] = value
    return out


def to_caffe2_blobs(state, eps=1e-5):
    """Our BN classifier -> Caffe2 blobs with BN folded into an affine (s, b)."""
    blobs = {}
    part = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}
    for key, value in state.items():
        if not key.endswith(".weight") or key.endswith("norm.weight"):
            continue
        module = key[: -len(".weight")]
        if module == "linear":
            blobs["pred_w"], blobs["pred_b"] = value.numpy(), state["linear.bias"].numpy()
            continue
        if module == "stem.conv1":
            name, bn = "conv1", "res_conv1_bn"
        else:
            stage, block, conv = module.split(".")
            name = f"{stage}_{block}_{part[conv]}"
            bn = f"{name}_bn"
        blobs[f"{name}_w"] = value.numpy()
        norm = {p: state[f"{module}.norm.{p}"] for p in ("weight", "bias", "running_mean", "running_var")}
        scale = norm["weight"] / (norm["running_var"] + eps).sqrt()
        blobs[f"{bn}_s"] = scale.numpy()
        blobs[f"{bn}_b"] = (norm["bias"] - norm["running_mean"] * scale).numpy()
    return blobs


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
        data = s.encode()
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
            self._tensor(np.asarray(obj))
        elif isinstance(obj, list):
            self._table([(i + 1, v) for i, v in enumerate(obj)])
        elif isinstance(obj, dict):
            self._table(list(obj.items()))
        elif isinstance(obj, T7Module):
            self._torch_header(obj.name)
            self._table(list(obj.fields.items()))
        else:
            raise TypeError(type(obj))


def _t7_conv(w, groups=1):
    w = w.numpy()
    return T7Module("cudnn.SpatialConvolution", weight=w, nOutputPlane=w.shape[0],
                    nInputPlane=w.shape[1] * groups, kH=w.shape[2], kW=w.shape[3], groups=groups)


def _t7_bn(state, prefix, eps=1e-5):
    return T7Module("nn.SpatialBatchNormalization", eps=eps,
                    **{p: state[f"{prefix}.{p}"].numpy()
                       for p in ("weight", "bias", "running_mean", "running_var")})


def _seq(*modules, name="nn.Sequential"):
    return T7Module(name, modules=list(modules))


def _t7_block(state, prefix, cardinality):
    relu = T7Module("cudnn.ReLU")
    main = _seq(_t7_conv(state[f"{prefix}.conv1.weight"]), _t7_bn(state, f"{prefix}.conv1.norm"),
                relu, _t7_conv(state[f"{prefix}.conv2.weight"], cardinality),
                _t7_bn(state, f"{prefix}.conv2.norm"), relu,
                _t7_conv(state[f"{prefix}.conv3.weight"]), _t7_bn(state, f"{prefix}.conv3.norm"))
    if f"{prefix}.shortcut.weight" in state:
        shortcut = _seq(_t7_conv(state[f"{prefix}.shortcut.weight"]),
                        _t7_bn(state, f"{prefix}.shortcut.norm"))
    else:
        shortcut = T7Module("nn.Identity")
    return _seq(_seq(main, shortcut, name="nn.ConcatTable"), T7Module("nn.CAddTable"), relu)


def write_t7_resnext(path, state, template, form="c"):
    """Our form-(c) classifier state as the nn.Sequential of facebookresearch/ResNeXt."""
    stages, make_block = [], _t7_block if form == "c" else _t7_block_form_b
    for k, n in enumerate(template.stage_blocks):
        stages.append(_seq(*[make_block(state, f"res{k + 2}.{j}", template.cardinality)
                             for j in range(n)]))
    model = _seq(_t7_conv(state["stem.conv1.weight"]), _t7_bn(state, "stem.conv1.norm"),
                 T7Module("cudnn.ReLU"), T7Module("nn.SpatialMaxPooling"), *stages,
                 T7Module("cudnn.SpatialAveragePooling"), T7Module("nn.View"),
                 T7Module("nn.Linear", weight=state["linear.weight"].numpy(),
                          bias=state["linear.bias"].numpy()))
    with open(path, "wb") as f:
        T7Writer(f).write(model)


def _t7_block_form_b(state, prefix, cardinality):
    """Torch7 'resnext_B': C paths (1x1, BN, ReLU, 3x3, BN, ReLU), JoinTable, 1x1, BN."""
    from resnext_det.checkpoint.block_forms import from_grouped

    block = {k: v for k, v in state.items() if k.startswith(prefix + ".")}
    b = {k[len(prefix) + 1:]: v for k, v in from_grouped(block, "b").items()}
    relu = T7Module("cudnn.ReLU")
    paths = [_seq(_t7_conv(b[f"paths.{i}.conv1.weight"]), _t7_bn(b, f"paths.{i}.conv1.norm"), relu,
                  _t7_conv(b[f"paths.{i}.conv2.weight"]), _t7_bn(b, f"paths.{i}.conv2.norm"), relu)
             for i in range(cardinality)]
    main = _seq(_seq(*paths, name="nn.ConcatTable"), T7Module("nn.JoinTable"),
                _t7_conv(b["conv3.weight"]), _t7_bn(b, "conv3.norm"))
    shortcut = (_seq(_t7_conv(b["shortcut.weight"]), _t7_bn(b, "shortcut.norm"))
                if "shortcut.weight" in b else T7Module("nn.Identity"))
    return _seq(_seq(main, shortcut, name="nn.ConcatTable"), T7Module("nn.CAddTable"), relu)
