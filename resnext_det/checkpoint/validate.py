"""Compare converted weights with the keys and shapes of the model they describe.

The expected keys come from our classifier built from the inferred template on the
"meta" device (no memory, no time); num_batches_tracked is not a weight and is ignored.
"""
import torch

from ..modeling.resnext import build_resnext
from .errors import KeyMismatchError


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
