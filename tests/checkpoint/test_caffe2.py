"""Caffe2 ImageNet pickles, checked against detectron2's own loading of the same file.

Oracle: detectron2's DetectionCheckpointer reads a .pkl without "model" / "__author__"
as a Caffe2 blob dict, renames it with its heuristics (checkpoint/c2_model_loading.py)
and loads it into detectron2's own `build_resnet_backbone` (NORM "FrozenBN"), built
with the stride placement the real files were trained with (Detectron's configs,
detectron2's model zoo configs). Ours must give the same res2..res5 with the stride
placement its metadata states.

Fixtures are written in the layouts of the real files:
  "detectron" (Detectron's R-50.pkl, X-101-64x4d.pkl, ...): a flat dict of Python-2
      protocol-2 pickle strings (SHORT_BINSTRING / BINSTRING opcodes, no
      `_codecs.encode`), BN folded into _bn_s / _bn_b with eps 1e-5, a zero _b per
      convolution (tools/pickle_caffe_blobs.py add_missing_biases), fc1000_{w,b}, and
      for the MSRA ResNet a real (non-zero) conv1_b.
  "detectron2" (detectron2's re-converted MSRA/R-50.pkl, FAIR/X-101-32x8d.pkl): the
      same names with _bn_rm / _bn_riv kept.
"""
import pickle
import struct

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone

from ckpt_helpers import FEATURES, ours_backbone
from resnext_det import parse_template
from resnext_det.checkpoint import ConversionError, convert_weights
from resnext_det.checkpoint.sources import caffe2
from resnext_det.utils.testing import max_rel_error, randomize_norms_

EPS = 1e-5
MSRA_STD = [1.0, 1.0, 1.0]
IMAGENET_BGR_STD = [57.375, 57.12, 58.395]  # detectron2 X_101_32x8d configs' PIXEL_STD
_C2_PART = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


# ------------------------------------------------------------------ fixtures: the files
class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: str and bytes as BINSTRING, as Detectron's files.

    Python 3 pickles bytes as `_codecs.encode(text, "latin1")`; Python 2's cPickle wrote
    its str (array data, blob names) as SHORT_BINSTRING / BINSTRING, which Python 3
    reads back as text (encoding="latin1") that numpy turns into the array's bytes.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_binstring(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("ascii")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_binstring
    dispatch[str] = save_binstring


def write_py2_pickle(obj, path):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)
    return path


def _c2_names(module):
    """detectron2 module name -> (conv blob, norm blob prefix) in Detectron's naming."""
    if module == "stem.conv1":
        return "conv1", "res_conv1_bn"
    stage, block, conv = module.split(".")
    name = f"{stage}_{block}_{_C2_PART[conv]}"
    return name, f"{name}_bn"


def c2_blobs(d2_state, layout, conv1_bias=False, num_classes=10, seed=0):
    """A detectron2 FrozenBN backbone's state -> the blobs of a `layout` ImageNet pickle."""
    gen = torch.Generator().manual_seed(seed)
    blobs = {}
    for key in d2_state:
        if not key.endswith(".weight") or key.endswith(".norm.weight"):
            continue
        module = key[: -len(".weight")]
        name, bn = _c2_names(module)
        norm = {p: d2_state[f"{module}.norm.{p}"] for p in ("weight", "bias", "running_mean",
                                                              "running_var")}
        blobs[f"{name}_w"] = d2_state[key].numpy()
        blobs[f"{name}_b"] = np.zeros(d2_state[key].shape[0], np.float32)
        if layout == "detectron":  # pickle_caffe_blobs.py remove_spatial_bn_layers
            scale = norm["weight"] / (norm["running_var"] + EPS).sqrt()
            blobs[f"{bn}_s"] = scale.numpy()
            blobs[f"{bn}_b"] = (norm["bias"] - norm["running_mean"] * scale).numpy()
        else:
            blobs.update({f"{bn}_s": norm["weight"].numpy(), f"{bn}_b": norm["bias"].numpy(),
                          f"{bn}_rm": norm["running_mean"].numpy(),
                          f"{bn}_riv": norm["running_var"].numpy()})
    if conv1_bias:  # MSRA's conv1 has one; Detectron and detectron2 ignore it
        blobs["conv1_b"] = torch.randn(blobs["conv1_w"].shape[0], generator=gen).numpy()
    blobs["fc1000_w"] = torch.randn(num_classes, 2048, generator=gen).numpy()
    blobs["fc1000_b"] = torch.randn(num_classes, generator=gen).numpy()
    return blobs


# ------------------------------------------------------------------- the oracle: detectron2
def d2_backbone(template, stride_in_1x1):
    """detectron2's own ResNet/ResNeXt (build_resnet_backbone), FrozenBN, res2..res5."""
    cfg = get_cfg()
    t = parse_template(template)
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NUM_GROUPS = t.depth, t.cardinality
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP, cfg.MODEL.RESNETS.STRIDE_IN_1X1 = t.bottleneck_width, stride_in_1x1
    cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.OUT_FEATURES = "FrozenBN", FEATURES
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def d2_loaded(path, template, stride_in_1x1):
    """detectron2's backbone with `path` loaded by its DetectionCheckpointer."""
    model = d2_backbone(template, stride_in_1x1)
    DetectionCheckpointer(model).load(str(path))
    return model


def exact_affine(model):
    """detectron2's FrozenBN computing exactly s * x + b, as Detectron's AffineChannel.

    For blobs without statistics detectron2 leaves running_var at 1, not 1 - eps
    (FrozenBatchNorm2d._load_from_state_dict, no version), so it computes
    s * x / sqrt(1 + eps) + b (its catalog.py: "different from affine by an epsilon").
    eps 0 removes that 1e-5 from the oracle; ours loads running_var 1 - eps, which is
    exactly s * x + b.
    """
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            assert torch.all(module.running_var == 1) and torch.all(module.running_mean == 0)
            module.eps = 0.0
    return model


def features(model, images):
    with torch.no_grad():
        return model(images)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# (template, layout, stride placement of the real files, expected pixel std)
CASES = {
    # Detectron's FBResNeXt / FAIR ResNeXt: configs STRIDE_1X1 False, catalog.py std 1
    "detectron-X": ("X50_2x4d", "detectron", False, MSRA_STD),
    # Detectron's MSRA R-50.pkl: STRIDE_1X1 True (MSRA), std 1, a real conv1_b
    "detectron-R": ("X50_1x8d", "detectron", True, MSRA_STD),
    # detectron2's FAIR/X-101-32x8d.pkl: STRIDE_IN_1X1 False, PIXEL_STD 57.x
    "detectron2-X": ("X50_2x4d", "detectron2", False, IMAGENET_BGR_STD),
    # detectron2's MSRA/R-50.pkl: defaults STRIDE_IN_1X1 True, PIXEL_STD 1
    "detectron2-R": ("X50_1x8d", "detectron2", True, MSRA_STD),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(case name, the pickle, detectron2's loading of it) for one layout and template."""
    template, layout, stride, _ = CASES[request.param]
    torch.manual_seed(0)
    source = randomize_norms_(d2_backbone(template, stride), seed=1)
    blobs = c2_blobs(source.state_dict(), layout, conv1_bias=template == "X50_1x8d")
    path = write_py2_pickle(blobs, tmp_path_factory.mktemp("c2") / f"{request.param}.pkl")
    return request.param, path, d2_loaded(path, template, stride)


def test_pickle_is_python2_style(case):
    """No `_codecs.encode` (Python 3's way to pickle bytes): arrays are BINSTRINGs."""
    data = case[1].read_bytes()
    assert b"_codecs" not in data and pickle.SHORT_BINSTRING + b"\x07conv1_w" in data


def test_same_features_as_detectron2(case, images):
    name, path, oracle = case
    template, layout, stride, std = CASES[name]
    result = convert_weights(path)
    meta = result.metadata
    assert (meta.source_format, meta.template, meta.norm) == ("caffe2", template, "FrozenBN")
    assert meta.stride_in_1x1 is stride and meta.pixel_std == std and meta.input_format == "BGR"
    assert f"{layout} layout" in meta.notes
    as_shipped = features(oracle, images)
    expected = features(exact_affine(oracle) if layout == "detectron" else oracle, images)
    ours = ours_backbone(template, result.state_dict, norm="FrozenBN", stride_in_1x1=stride)
    assert max_rel_error(features(ours, images), expected) < 1e-5
    assert max_rel_error(features(ours, images), as_shipped) < 1e-4  # detectron2's eps only
    wrong = ours_backbone(template, result.state_dict, norm="FrozenBN", stride_in_1x1=not stride)
    assert max_rel_error(features(wrong, images), expected) > 1e-2  # the stride is visible


def test_dropped_blobs_name_their_rule(case):
    name, path, _ = case
    result = convert_weights(path, keep_fc=True)
    dropped = dict(result.report.dropped)
    assert dropped["res2_0_branch2a_b"] == caffe2.ZERO_BIAS
    assert dropped["res5_2_branch2c_b"] == caffe2.ZERO_BIAS
    assert dropped["conv1_b"] == caffe2.CONV1_BIAS  # zero, or MSRA's real one (-R cases)
    assert result.metadata.num_classes == 10  # fc1000_{w,b} -> linear


def test_blobs_wrapper_pred_and_momentum(case, tmp_path):
    """Detectron's {"blobs": ...} wrapper, pred_{w,b} and *_momentum: the same weights."""
    flat = convert_weights(case[1], keep_fc=True)
    with open(case[1], "rb") as f:
        blobs = pickle.load(f, encoding="latin1")
    blobs["pred_w"], blobs["pred_b"] = blobs.pop("fc1000_w"), blobs.pop("fc1000_b")
    blobs["conv1_w_momentum"] = np.zeros_like(blobs["conv1_w"])
    wrapped = convert_weights(write_py2_pickle({"blobs": blobs}, tmp_path / "w.pkl"), keep_fc=True)
    assert wrapped.state_dict.keys() == flat.state_dict.keys()
    assert all(torch.equal(wrapped.state_dict[k], v) for k, v in flat.state_dict.items())
    assert wrapped.metadata == flat.metadata
    assert dict(wrapped.report.dropped)["conv1_w_momentum"] == caffe2.MOMENTUM


def test_non_zero_conv_bias_is_an_error(tmp_path):
    blobs = c2_blobs(randomize_norms_(d2_backbone("X50_2x4d", False)).state_dict(), "detectron")
    blobs["res3_0_branch2b_b"] = np.full_like(blobs["res3_0_branch2b_b"], 0.5)
    with pytest.raises(ConversionError, match="'res3_0_branch2b_b' is a non-zero convolution bias"):
        convert_weights(write_py2_pickle(blobs, tmp_path / "bad.pkl"))


def test_preset_overrides_the_layout_rule(case):
    """--caffe2-preset msra|fair wins over the rule, and the notes say so."""
    path = case[1]
    msra = convert_weights(path, caffe2_preset="msra").metadata
    assert (msra.stride_in_1x1, msra.pixel_std) == (True, MSRA_STD) and "preset 'msra'" in msra.notes
    fair = convert_weights(path, caffe2_preset="fair").metadata
    assert (fair.stride_in_1x1, fair.pixel_std) == (False, IMAGENET_BGR_STD)
    with pytest.raises(ConversionError, match="preset 'caffe' is not one of"):
        convert_weights(path, caffe2_preset="caffe")
