"""Comparing two implementations of one function (torch.testing's habit: a library ships
the helpers its checks use). The tests and benchmarks/bench.py both compare our models
with other people's; benchmarks must not import tests/, so the one copy lives here.
"""
import torch
from detectron2.layers import FrozenBatchNorm2d

# Where a residual path ends: its last norm gets a small scale (see randomize_norms_).
# Ours (form c / b: conv3.norm; form a: conv3_norm) and torchvision's (bn3).
LAST_NORM_SUFFIXES = ("conv3.norm", "conv3_norm", "bn3")


def max_rel_error(got, expected):
    """max |got - expected| / max |expected|, in float64.

    Args:
        got, expected: tensors of one shape, or dicts of them (the largest error over the
            keys of `expected`; `got` may hold more keys).
    Returns:
        float: 0 for identical tensors; an all-zero `expected` divides by 1e-12.
    """
    if isinstance(expected, dict):
        return max(max_rel_error(got[k], expected[k]) for k in expected)
    got, expected = got.detach().double(), expected.detach().double()
    if got.shape != expected.shape:  # broadcasting would compare other elements
        raise ValueError(f"shapes differ: got {tuple(got.shape)}, expected {tuple(expected.shape)}")
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def randomize_norms_(module, seed=0):
    """Give every norm random statistics and affine terms, in place; returns the module.

    Default norms (mean 0, var 1, scale 1, bias 0) would hide a norm applied to the wrong
    channels, a missing one, or a fold that drops a term; random ones make every tensor
    count in a comparison. Convolution weights keep their (random) initialization. The
    last norm of each residual path (LAST_NORM_SUFFIXES) gets a small scale (0.05-0.15),
    as trained ResNets have, so that activations stay of order one through a hundred
    layers and detectors still predict boxes.

    Args:
        module: any module; BatchNorm, SyncBatchNorm, FrozenBatchNorm2d and GroupNorm
            inside it are changed (what a norm lacks, e.g. GroupNorm's statistics, is skipped).
        seed: the generator's seed (same seed, same values).
    Returns:
        `module`, in the mode it was in.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():
            if not _is_norm(mod):
                continue
            last = mod_name.endswith(LAST_NORM_SUFFIXES)
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(mod, name, None)
                if not isinstance(tensor, torch.Tensor):
                    continue
                values = torch.rand(tensor.shape, generator=gen, dtype=torch.float64)
                if name == "weight" and last:
                    tensor.copy_(0.05 + 0.1 * values)
                elif name in ("weight", "running_var"):
                    tensor.copy_(0.5 + values)
                else:
                    tensor.copy_((values - 0.5) * 0.2)
    return module


def _is_norm(module):
    return isinstance(module, (FrozenBatchNorm2d, torch.nn.modules.batchnorm._NormBase,
                               torch.nn.GroupNorm))


def detection_error(got, expected):
    """The largest relative difference between two sets of detections, matched as sets.

    Two equivalent models (e.g. optimize_for_inference's copy) give the same detections
    up to float rounding, but an untrained model scores many boxes alike and rounding may
    swap two of them in rank; so each detection is compared with its closest one of the
    same class in the other set, both ways, not with the one at its rank.

    Args:
        got, expected (Instances): with pred_boxes, scores and pred_classes.
    Returns:
        float: max over detections of max(|score diff| / max |score|, max |box corner
        diff| / max |box corner|) to the closest same-class counterpart; inf when the
        counts differ or a detection has no counterpart of its class.
    """
    if len(got) != len(expected):
        return float("inf")
    if len(got) == 0:
        return 0.0
    scores_a, scores_b = (x.scores.detach().double() for x in (got, expected))
    boxes_a, boxes_b = (x.pred_boxes.tensor.detach().double() for x in (got, expected))
    score_err = (scores_a[:, None] - scores_b[None]).abs() / scores_b.abs().max().clamp_min(1e-12)
    box_err = ((boxes_a[:, None] - boxes_b[None]).abs().amax(-1)
               / boxes_b.abs().max().clamp_min(1e-12))
    err = torch.maximum(score_err, box_err)
    err[got.pred_classes[:, None] != expected.pred_classes[None]] = float("inf")
    return float(max(err.min(1).values.max(), err.min(0).values.max()))
