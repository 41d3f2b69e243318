"""Faster training with frozen norms: each one computed inside its convolution.

A FrozenBatchNorm2d is the affine map y = x * s + shift per channel, with
s = gamma / sqrt(var + eps) and shift = beta - mean * s (its buffers never change). After
a convolution z = W * x + b, norm(z) = (W * s) * x + (b * s + shift): one convolution with
weight W * s and bias b * s + shift. Computing W * s in every forward (not once, as
inference.py does) keeps W the trained parameter, so its gradient is the unfolded one,
dL/dW = s * dL/dW', and the parameters, buffers, their names and the checkpoints stay
detectron2's. What it saves is the norm's separate pass over every feature map, and that
pass's backward (detectron2's FrozenBN computes x * s + shift as two tensor ops when its
input needs gradients).

Only FrozenBN is folded: a trainable BN / GN computes statistics of the batch, which a
convolution's weight cannot hold. Form (a)'s norm after the sum of its paths
(SummedPathsBottleneck.conv3_norm) is not after one convolution and stays as it is.

Measured (benchmarks/bench.py --only train: Faster R-CNN X50_32x4d FPN, 800x1333, batch 2,
1 thread of an AVX2 EPYC): a training iteration spends ~87% of its time in convolutions
(forward and backward), and the norm passes folding removes were ~2%; "fold" timed
0.98x-1.05x of detectron2's built-in, within that machine's noise. channels_last was 0.69x
there, because oneDNN's NHWC weight gradient of 3x3 convolutions is slow on AVX2.
"""
import logging

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d

logger = logging.getLogger(__name__)

TRAIN_FAST_MODES = ("", "fold", "fold+nhwc", "auto")


def auto_training_mode(device):
    """What "auto" trains as on `device` (str or torch.device): the faster mode measured there.

    "fold+nhwc" on CPUs with AVX-512 (oneDNN's NHWC kernels, gradients included, pay
    there): benchmarks/bench.py --only train, X50_32x4d FPN 800x1333 batch 2, 2 threads:
    1.36x detectron2's built-in against "fold" 0.97x on a Zen 4, 1.38x against 1.07x on a
    Zen 5; the digits demo's step 1.12x "fold" on the Zen 4 (benchmarks/demo_step.py).
    "fold" elsewhere: on an AVX2 CPU channels_last training was 0.69x (above), and on CUDA
    the two have not been timed yet (benchmarks/gpu.sh times both).
    """
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "fold+nhwc" if torch.device(device).type == "cpu" and avx512 else "fold"


class FrozenNormConv2d(Conv2d):
    """detectron2's Conv2d whose FrozenBN runs inside it: conv(x, W * s, b * s + shift).

    No state of its own: the same `weight`, `bias`, `norm` and `activation` as the Conv2d it
    replaces, so state_dict keys, checkpoints and optimizers are unchanged. Without a
    FrozenBN (inference.fold_norm removed it) it is detectron2's Conv2d.
    """

    def forward(self, x):
        norm = self.norm
        if not isinstance(norm, FrozenBatchNorm2d):  # inference.fold_norm took it: Conv2d's
            # forward, spelt out (torch.jit.script compiles no super() call)
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                         self.groups)
            if norm is not None:
                x = norm(x)
            return x if self.activation is None else self.activation(x)
        # norm(x) = x * scale + shift (computed here, not in a helper taking the norm:
        # torch.jit.script cannot pass a module to a function)
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        conv_bias = self.bias  # a local, so that torch.jit.script refines the Optional
        bias = shift if conv_bias is None else conv_bias * scale + shift
        x = F.conv2d(x, self.weight * scale.reshape(-1, 1, 1, 1), bias, self.stride,
                     self.padding, self.dilation, self.groups)
        return x if self.activation is None else self.activation(x)


def fold_frozen_norms_for_training(module):
    """Make every detectron2 Conv2d followed by a FrozenBN a FrozenNormConv2d (in place).

    The module's class is swapped, as torch.nn.utils.parametrize does: FrozenNormConv2d
    adds no state, so nothing else changes. Subclasses of Conv2d, which may have forwards
    of their own, are left alone.

    Returns:
        int: the number of convolutions changed.
    """
    count = 0
    for m in module.modules():
        if type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d):
            m.__class__ = FrozenNormConv2d
            count += 1
    return count


def prepare_for_training(model, mode, device="cpu"):
    """`model` set up for training as MODEL.RESNEXT.FAST_TRAINING says, in place.

    Args:
        model (nn.Module): any module (a detectron2 meta-architecture, a backbone).
        mode (str): "" -> unchanged; "fold" -> frozen norms computed inside their
            convolutions (fold_frozen_norms_for_training); "fold+nhwc" -> also 4-d
            parameters and buffers in channels_last (the keypoint head's excepted), so
            convolutions run (and return) NHWC whatever the layout of their input; "auto" ->
            the one of the two that auto_training_mode gives for `device` (logged).
        device (str or torch.device): where the model trains (MODEL.DEVICE).

    Returns:
        nn.Module: `model`, with `folded_norms` (int) and `training_mode` (the mode
        applied) set when mode is not "".
    """
    if mode not in TRAIN_FAST_MODES:
        raise ValueError(f"mode {mode!r} is not one of {TRAIN_FAST_MODES}")
    if mode == "auto":
        mode = auto_training_mode(device)
        logger.info(f"MODEL.RESNEXT.FAST_TRAINING 'auto': training as {mode!r} on {device} "
                    f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")
    if mode:
        model.folded_norms, model.training_mode = fold_frozen_norms_for_training(model), mode
    if mode == "fold+nhwc":
        model.to(memory_format=torch.channels_last)
        # detectron2's keypoint_rcnn_loss .view()s the keypoint head's logits as (N x K, H x W):
        # NHWC ones stopped the first iteration (RuntimeError). Its input, the pooled regions,
        # is NCHW (the poolers allocate their output so): with NCHW weights, so is its output.
        head = getattr(getattr(model, "roi_heads", None), "keypoint_head", None)
        if head is not None:
            head.to(memory_format=torch.contiguous_format)
    return model
