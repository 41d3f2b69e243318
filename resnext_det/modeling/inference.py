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
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .blocks import SummedPathsBottleneck
from .roi_align import use_roi_align

_FOLDABLE = (FrozenBatchNorm2d, nn.BatchNorm2d, nn.SyncBatchNorm)


def _foldable(norm):
    """A per-channel norm with fixed statistics: FrozenBN, or BN / SyncBN in eval mode
    that keeps running statistics."""
    if not isinstance(norm, _FOLDABLE):
        return False
    if norm.training and not isinstance(norm, FrozenBatchNorm2d):  # batch statistics
        return False
    return getattr(norm, "running_var", None) is not None


def _fused(conv, norm, *, with_shift=True):
    """(weight, bias) of `conv` followed by `norm`, by torch's fuse_conv_bn_weights in float64.

    FrozenBatchNorm2d has BN's running_mean, running_var, eps, weight and bias, so the one
    function serves both. with_shift=False: the scale only (the norm's mean and beta left
    out), for all paths but one in form (a).
    """
    as64 = lambda t: None if t is None else t.double()  # noqa: E731
    mean, beta = as64(norm.running_mean), as64(norm.bias)
    if not with_shift:
        mean, beta = torch.zeros_like(mean), None
    return fuse_conv_bn_weights(conv.weight.double(), as64(conv.bias), mean,
                                norm.running_var.double(), norm.eps, as64(norm.weight), beta)


def _set_weights(conv, weight, bias):
    """Store float64 `weight` / `bias` (None: no bias) in `conv`'s dtype, frozen."""
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    conv.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)


@torch.no_grad()
def fold_norm(conv):
    """Fold `conv.norm` into `conv`'s weight and bias (in place); returns True if folded."""
    norm = conv.norm
    if not _foldable(norm):
        return False
    _set_weights(conv, *_fused(conv, norm))
    conv.norm = None
    return True


@torch.no_grad()
def fold_summed_paths_norm(block):
    """Form (a): the norm after the sum of the paths folds into every path's last 1x1.

    norm(sum_i W_i x) = sum_i (s * W_i) x + shift, so each W_i is scaled and path 0
    carries the shift as its bias.
    """
    norm = block.conv3_norm
    if not _foldable(norm):
        return False
    for i, path in enumerate(block.paths):
        has_bias = i == 0 or path.conv3.bias is not None
        weight, bias = _fused(path.conv3, norm, with_shift=i == 0)
        _set_weights(path.conv3, weight, bias if has_bias else None)
    block.conv3_norm = nn.Identity()
    return True


def fold_norms(module):
    """Fold every foldable norm in `module` into its convolution (in place); returns the count.

    Norms in training mode (trainable BN) are left alone.
    """
    count = sum(fold_norm(m) for m in module.modules() if isinstance(m, Conv2d) and m.norm is not None)
    return count + sum(fold_summed_paths_norm(m) for m in module.modules()
                       if isinstance(m, SummedPathsBottleneck))


def optimize_for_inference(model, *, channels_last=True, roi_align="sparse"):
    """An eval-mode copy of `model` with norms folded, NHWC weights and its ROI pooling as
    one sparse product on CPUs; `model` is untouched.

    The copy computes the same function up to float rounding (max relative error < 1e-5
    on res2..res5: tests/modeling/test_inference.py); use it for inference only.

    Args:
        model (nn.Module): any module: a backbone, a detectron2 meta-architecture, a
            classifier. Its FrozenBN norms and BN / SyncBN norms in eval mode are folded.
        channels_last (bool): store 4-d weights as NHWC, so convolutions run (and return)
            NHWC; faster at batch 8 on CPUs and on GPUs, ~10% slower at batch 1 on CPUs.
        roi_align (str): the ROIPoolers' ROIAlign (roi_align.use_roi_align): "sparse"
            pools all FPN levels in one sparse product on CPUs (torchvision's values
            within 1e-5; detectron2's pooler elsewhere and while tracing or scripting):
            the pooler 1.4x faster than torchvision's CPU kernel at COCO FPN's sizes,
            which runs on one thread and copies NHWC features to NCHW first, and the FPN
            X50 copy at 800x1216 1.17x (benchmarks/roi_align.py); "torchvision":
            detectron2's ROIPooler.

    Returns:
        nn.Module: the copy, in eval mode, with `folded_norms` (int) set to the number
        of norms folded.
    """
    fast = copy.deepcopy(model).eval()
    fast.folded_norms = fold_norms(fast)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
    use_roi_align(fast, roi_align)
    return fast
