"""Helpers of the checkpoint tests: our models loaded with converted weights, fixture writers.

Random BN statistics and relative errors: resnext_det.utils.testing."""
import pickle

import numpy as np
import torch

from resnext_det.modeling import build_resnext, resnext_classifier

FEATURES = ["res2", "res3", "res4", "res5"]
TINY = "X50_2x4d"  # the smallest template that is still a real ResNeXt-50 layout


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

