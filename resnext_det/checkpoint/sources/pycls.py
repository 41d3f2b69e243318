"""pycls ResNet / ResNeXt checkpoints (.pyth).

pycls.core.checkpoint.save_checkpoint writes {"epoch", "model_state", "optimizer_state",
"cfg" (the YAML dump of its config)}; since 2021 also "ema_state" (the weights' moving
average) with "test_err" and "ema_err" (top-1 errors of the two). Loading a model alone,
pycls's load_checkpoint takes "model_state" if test_err <= ema_err, else "ema_state"
(a missing error counts as 100, a missing ema_state as model_state); `best_state_key`
makes the same choice, and the metadata notes say which. Keys of either state:

  stem.conv, stem.bn                        -> stem.conv1, stem.conv1.norm
  s{i}.b{j}.f.{a,b,c}, .f.{a,b,c}_bn        -> res{i+1}.{j-1}.conv{1,2,3}, .conv{k}.norm
  s{i}.b{j}.proj, s{i}.b{j}.bn              -> res{i+1}.{j-1}.shortcut, .shortcut.norm
  head.fc                                   -> linear
(pycls/models/anynet.py and resnet.py, facebookresearch/pycls at 5719de6.)

Stride placement differs between pycls's two ResNeXt builders:
  MODEL.TYPE "anynet" (the model zoo's R-/X- "dds_baselines"): stride in the 3x3, always;
  MODEL.TYPE "resnet": RESNET.STRIDE_1X1, default True (MSRA, stride in the 1x1).
Newer checkpoints carry the YAML config under "cfg", which decides; without it we
assume the model zoo's anynet (stride in the 3x3) and say so in the metadata notes.
pycls reads images with cv2 (BGR), normalizes in RGB with the ImageNet mean/std and
feeds BGR (pycls/datasets/imagenet.py, _prepare_im).
"""
import re

from ..errors import ConversionError
from .base import DROP, IMAGENET_BGR, Source, rename_each, same_state

_BLOCK = re.compile(r"^s(\d)\.b(\d+)\.(f\.a|f\.b|f\.c|f\.a_bn|f\.b_bn|f\.c_bn|proj|bn)\.(\w+)$")
_PART = {"f.a": "conv1", "f.b": "conv2", "f.c": "conv3", "f.a_bn": "conv1.norm",
         "f.b_bn": "conv2.norm", "f.c_bn": "conv3.norm", "proj": "shortcut",
         "bn": "shortcut.norm"}
_STEM = {"stem.conv": "stem.conv1", "stem.bn": "stem.conv1.norm", "head.fc": "linear"}


def rename_key(key):
    """A pycls key -> ours (DROP for num_batches_tracked, None if unknown)."""
    if key.endswith("num_batches_tracked"):
        return DROP
    if m := _BLOCK.match(key):
        return f"res{int(m[1]) + 1}.{int(m[2]) - 1}.{_PART[m[3]]}.{m[4]}"
    module, _, param = key.rpartition(".")
    return f"{_STEM[module]}.{param}" if module in _STEM else None


def matches(state, wrapper):
    return "stem.conv.weight" in state and "s1.b1.f.a.weight" in state


def _top1_error(checkpoint, name):
    value = checkpoint.get(name, 100)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConversionError(f"the pycls checkpoint's {name} is {value!r}, not a number: "
                              "pycls's load_checkpoint compares test_err with ema_err to choose "
                              "model_state or ema_state")
    return value


def best_state_key(checkpoint):
    """"model_state" or "ema_state": the one pycls's load_checkpoint loads into a model."""
    test_err, ema_err = _top1_error(checkpoint, "test_err"), _top1_error(checkpoint, "ema_err")
    ema_state = "ema_state" if "ema_state" in checkpoint else "model_state"
    key = "model_state" if test_err <= ema_err else ema_state
    if not isinstance(checkpoint[key], dict):
        raise ConversionError(f"the pycls checkpoint's {key} (chosen as pycls chooses it: "
                              f"test_err {test_err}, ema_err {ema_err}) is "
                              f"{type(checkpoint[key]).__name__}, not a state dict")
    return key


def state_choice(checkpoint):
    """Which state was converted, and why, for the metadata notes."""
    key = best_state_key(checkpoint)
    if "ema_state" not in checkpoint:
        return f"{key} (no ema_state)"
    errors = f"test_err {checkpoint.get('test_err')}, ema_err {checkpoint.get('ema_err')}"
    return f"{key} ({errors}), as pycls loads it: ema_state only if ema_err < test_err"


def _cfg_value(cfg_text, section, key):
    """A value of the YAML dump in a pycls checkpoint's "cfg", or None."""
    import yaml

    try:
        node = yaml.safe_load(cfg_text) if isinstance(cfg_text, str) else cfg_text
    except yaml.YAMLError as e:
        raise ConversionError(f"the pycls checkpoint's cfg is not YAML ({str(e).splitlines()[0]}"
                              "): it says where the stride is (RESNET.STRIDE_1X1)") from None
    node = node.get(section) if isinstance(node, dict) else None
    return node.get(key) if isinstance(node, dict) else None


def stride_in_1x1_from_cfg(cfg_text):
    """(stride_in_1x1, how it was decided) from a pycls checkpoint's "cfg", if any."""
    if not cfg_text:
        return False, "no cfg in checkpoint: assumed the model zoo's anynet (stride in 3x3)"
    model_type = _cfg_value(cfg_text, "MODEL", "TYPE")
    if model_type == "resnet":
        value = _cfg_value(cfg_text, "RESNET", "STRIDE_1X1")
        value = True if value is None else bool(value)
        return value, f"cfg MODEL.TYPE=resnet, RESNET.STRIDE_1X1={value}"
    return False, f"cfg MODEL.TYPE={model_type}: anynet puts the stride in the 3x3"


def defaults(wrapper, template):
    wrapper = wrapper if isinstance(wrapper, dict) else {}
    stride, how = stride_in_1x1_from_cfg(wrapper.get("cfg"))
    state = f"; converted {state_choice(wrapper)}" if "model_state" in wrapper else ""
    return dict(IMAGENET_BGR, stride_in_1x1=stride, norm="BN", notes=f"pycls: {how}{state}")


LAYOUT = ("stem.conv, stem.bn, s{1-4}.b{j}.f.{a,b,c}[_bn], s{i}.b{j}.proj / .bn, head.fc "
          "(under model_state or ema_state)")
SOURCE = Source("pycls", matches, rename_each(rename_key), same_state, defaults, layout=LAYOUT)
