"""Compare converted weights with the keys and shapes of the model they describe.

The expected keys come from our classifier built from the inferred template on the
"meta" device (no memory, no time); num_batches_tracked is not a weight and is ignored.
"""
import numpy as np
import torch

from ..modeling.resnext import build_resnext
from .errors import KeyMismatchError
from .readers import UnreadableFileError

DIVERGED_FIX = ("NaN or infinite weights come from a training that diverged: take an "
                "earlier checkpoint of it (e.g. with a lower SOLVER.BASE_LR from there)")
RECONVERT_FIX = "Convert the weights from their original file"


def expected_shapes(template, num_classes=None, stem_out_channels=64, res2_out_channels=256):
    """{key: shape} of our form-(c) BN classifier (num_classes None: no `linear`), of the
    paper's widths unless told (our trainings' may be narrower: the digits demo's)."""
    with torch.device("meta"):
        model = build_resnext(template, num_classes=num_classes, norm="BN",
                              stem_out_channels=stem_out_channels,
                              res2_out_channels=res2_out_channels)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def key_problems(state, expected):
    """One line per missing, unexpected or shape-mismatched key."""
    problems = [f"missing key {k!r} (model shape {shape})"
                for k, shape in expected.items() if k not in state]
    for key, value in state.items():
        if key not in expected:
            problems.append(f"unexpected key {key!r} (checkpoint shape {tuple(value.shape)})")
        elif tuple(value.shape) != expected[key]:
            problems.append(f"shape mismatch for {key!r}: checkpoint {tuple(value.shape)}, "
                            f"model {expected[key]}")
    return problems


def keep_matching(state, expected, problems, allow_partial):
    """`state` without its bad keys; KeyMismatchError if any, unless `allow_partial`."""
    if problems and not allow_partial:
        raise KeyMismatchError(problems)
    return {k: v for k, v in state.items() if k in expected and tuple(v.shape) == expected[k]}


def check_values(state, path):
    """Each array of `state` (a state dict, tensors or numpy arrays) holds real, finite
    numbers; integers only in a norm's num_batches_tracked. torch copies NaN, complex (the
    real part) and integer arrays into a model's float weights without a word: a diverged
    training's NaN checkpoint predicted nothing, and exit 0."""
    for key, value in state.items():
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biufc":
            raise UnreadableFileError(path, f"{key!r} holds {value.dtype} values, not numbers",
                                      RECONVERT_FIX)
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            continue
        value = torch.as_tensor(value)
        if value.numel() == 0:  # template inference divided by its 0 (ZeroDivisionError)
            raise UnreadableFileError(path, f"{key!r} holds no values (shape "
                                      f"{tuple(value.shape)})", RECONVERT_FIX)
        if value.is_complex() or not (value.is_floating_point() or value.dtype == torch.bool
                                      or key.endswith("num_batches_tracked")):
            raise UnreadableFileError(path, f"{key!r} holds {value.dtype} values, not real "
                                      "floating-point weights", RECONVERT_FIX)
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UnreadableFileError(path, f"{key!r} holds {bad} NaN or infinite values (of "
                                      f"{value.numel()})", DIVERGED_FIX)
        if key.endswith("running_var") and bool((value < 0).any()):  # sqrt: NaN outputs
            raise UnreadableFileError(path, f"{key!r} holds {int((value < 0).sum())} negative "
                                      "variances", f"{RECONVERT_FIX} (a variance is >= 0)")
