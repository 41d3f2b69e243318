"""A faster copy of a model for inference, computing the same function.

In eval mode a norm with fixed statistics is an affine map per channel,
y = (x - mean) / sqrt(var + eps) * gamma + beta, so it folds into the convolution before
it: W' = W * s, b' = beta - mean * s (+ b * s), with s = gamma / sqrt(var + eps). That
removes one full read and write of every feature map (the norms were separate passes
over memory). channels_last (NHWC) lets oneDNN on CPUs and cuDNN on GPUs run the 1x1
convolutions, which carry most of ResNeXt's multiply-adds, as plain matrix products.
Training keeps the unfolded model: folding is only valid while statistics are frozen.

Measured on 2 cores of an AVX-512 EPYC (benchmarks/README.md): at batch 8, NHWC makes
the ResNeXt-50 classifier ~1.4x faster than NCHW; at batch 1 it is ~10% slower, so pass
channels_last=False for single-image CPU inference.
"""
import copy

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

from .blocks import SummedPathsBottleneck

_FOLDABLE = (FrozenBatchNorm2d, nn.BatchNorm2d, nn.SyncBatchNorm)


def _norm_scale_shift(norm):
    """(scale, shift) of a per-channel norm with fixed statistics, in float64."""
    var = norm.running_var.double()
    mean = norm.running_mean.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + norm.eps)
    return scale, beta - mean * scale


@torch.no_grad()
def fold_norm(conv):
    """Fold `conv.norm` into `conv`'s weight and bias (in place); returns True if folded."""
    norm = conv.norm
    if not isinstance(norm, _FOLDABLE) or (isinstance(norm, nn.BatchNorm2d) and norm.training):
        return False
    if getattr(norm, "running_var", None) is None:  # BatchNorm without running stats
        return False
    scale, shift = _norm_scale_shift(norm)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else shift + conv.bias.double() * scale
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    conv.norm = None
    return True


@torch.no_grad()
def fold_summed_paths_norm(block):
    """Form (a): the norm after the sum of the paths folds into every path's last 1x1.

    norm(sum_i W_i x) = sum_i (s * W_i) x + shift, so each W_i is scaled and path 0
    carries the shift as its bias.
    """
    norm = block.conv3_norm
    if not isinstance(norm, _FOLDABLE) or (isinstance(norm, nn.BatchNorm2d) and norm.training):
        return False
    scale, shift = _norm_scale_shift(norm)
    for i, path in enumerate(block.paths):
        conv = path.conv3
        conv.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(
            conv.weight.dtype), requires_grad=False)
        if i == 0:
            conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    block.conv3_norm = nn.Identity()
    return True


def fold_norms(module):
    """Fold every foldable norm in `module` into its convolution (in place); returns the count.

    Norms in training mode (trainable BN) are left alone.
    """
    count = sum(fold_norm(m) for m in module.modules() if isinstance(m, Conv2d) and m.norm is not None)
    return count + sum(fold_summed_paths_norm(m) for m in module.modules()
                       if isinstance(m, SummedPathsBottleneck))


def optimize_for_inference(model, *, channels_last=True):
    """An eval-mode copy of `model` with norms folded and NHWC weights; `model` is untouched.

    Args:
        channels_last: store 4-d weights as NHWC, so convolutions run (and return) NHWC.
    """
    fast = copy.deepcopy(model).eval()
    fast.folded_norms = fold_norms(fast)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
    return fast
