"""Form (c) with a deformable grouped 3x3 (Dai et al. 2017; modulated: Zhu et al. 2019).

The 3x3 samples its input at the kernel grid plus an offset per position, predicted from
the same input by a plain 3x3 (`conv2_offset`); the modulated version also predicts a
weight in (0, 1) per sample (the mask). The layout is detectron2's DeformBottleneckBlock
(MODEL.RESNETS.DEFORM_ON_PER_STAGE / DEFORM_MODULATED / DEFORM_NUM_GROUPS), so its
checkpoints load with the same names and shapes: `conv2_offset` (weight, bias) with
(2 or 3) * 9 * G outputs, `conv2` (weight (out, in / C, 3, 3), no bias, `.norm`).

The op is torchvision's deform_conv2d; detectron2's DeformConv / ModulatedDeformConv
need its compiled _C, which the PyPI detectron2 lacks. Both read the offset channels the
same way, so a detectron2 checkpoint means the same here. detectron2's CUDA kernels
(layers/csrc/deformable/deform_conv_cuda_kernel.cu: deformable_im2col_gpu_kernel,
modulated_deformable_im2col_gpu_kernel) read, for deformable group g and kernel position
(i, j), the y offset from channel 18g + 2(3i + j), the x offset from the channel after it
and the mask from channel 9g + 3i + j of the mask; torchvision's kernel
(csrc/ops/cpu/deform_conv2d_kernel.cpp, derived like detectron2's from mmdetection's)
indexes offset_h, offset_w and mask with the same expressions; and detectron2's own
DeformConv, given CPU tensors, passes its offset unchanged to torchvision's deform_conv2d.
tests/modeling/test_deform.py checks the wiring against plain convolutions of shifted
inputs, and against detectron2's DeformBottleneckBlock run on the CPU.
"""
from typing import Optional, Tuple

import torch
from detectron2.layers import Conv2d
from torch import nn
from torchvision.ops import deform_conv2d

from .blocks import GroupedBottleneck

KERNEL_POSITIONS = 9  # a 3x3 kernel: 9 sampling positions, each with (dy, dx) [and a mask]


class DeformConv2d(Conv2d):
    """detectron2's Conv2d that samples its input at offset positions: forward(x, offset, mask).

    Same parameters as the plain convolution it stands for (weight (out, in / groups, k, k),
    optional bias, `.norm`, `.activation`), which is also what detectron2's DeformConv
    and ModulatedDeformConv hold. So inference.fold_norm folds its norm like any Conv2d's:
    the bias is added after the (modulated) sum, as a folded norm's shift must be.
    """

    def __init__(self, *args, deformable_groups=1, **kwargs):
        """
        Args:
            deformable_groups (int): G: the input channels form G groups, each with its
                own offsets (and masks); must divide the input channels.
            args, kwargs: detectron2 Conv2d's (in_channels, out_channels, kernel_size,
                stride, padding, dilation, groups, bias, norm, activation).
        """
        super().__init__(*args, **kwargs)
        if self.in_channels % deformable_groups:
            raise ValueError(f"deformable_groups={deformable_groups} must divide "
                             f"in_channels={self.in_channels}")
        self.deformable_groups = deformable_groups

    def forward(self, x, offset, mask: Optional[torch.Tensor] = None):
        """
        Args:
            x (Tensor): (N, in_channels, H, W).
            offset (Tensor): (N, 2 * G * kh * kw, H_out, W_out), for each group and
                kernel position a (dy, dx) pair in input pixels.
            mask (Tensor or None): (N, G * kh * kw, H_out, W_out), each sample's weight;
                None: 1 (deformable convolution v1).

        Returns:
            Tensor: in x's type; float16 / bfloat16 inputs are computed in float32.
        """
        dtype = x.dtype
        # torchvision's CPU kernel has no bfloat16, and torchvision 0.29 has no CPU autocast
        # rule for the op; its CUDA rule (csrc/ops/autocast) runs it in float32 and returns
        # the input's type. Likewise here for float16 / bfloat16 (INFERENCE_DTYPE, SOLVER.AMP).
        compute = torch.float32 if dtype == torch.float16 or dtype == torch.bfloat16 else dtype
        bias = self.bias  # a local, so that torch.jit.script refines the Optional
        x = deform_conv2d(x.to(compute), offset.to(compute), self.weight.to(compute),
                          None if bias is None else bias.to(compute), stride=self.stride,
                          padding=self.padding, dilation=self.dilation,
                          mask=None if mask is None else mask.to(compute)).to(dtype)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.activation is None else self.activation(x)


class DeformGroupedBottleneck(GroupedBottleneck):
    """Form (c), deformable: 1x1, norm, ReLU, deformable grouped 3x3 (offsets from a 3x3),
    norm, ReLU, 1x1, norm; add, ReLU.

    Starts as the plain block: conv2 keeps the plain 3x3's initial weight and conv2_offset
    starts at zero (detectron2's initialization), so offsets are 0 and, when modulated,
    every mask is sigmoid(0) = 0.5.
    """

    def __init__(self, in_channels, out_channels, *, deform_modulated=False,
                 deform_num_groups=1, **kwargs):
        """
        Args:
            deform_modulated (bool): also predict a mask per sample (deformable conv v2).
            deform_num_groups (int): G, groups of bottleneck channels that share one set
                of offsets; must divide C * d.
            kwargs: GroupedBottleneck's (cardinality, bottleneck_width, stride, norm,
                stride_in_1x1, dilation, zero_init_last).
        """
        super().__init__(in_channels, out_channels, **kwargs)
        self.deform_modulated, self.deform_num_groups = deform_modulated, deform_num_groups
        # per group 18 channels (dy, dx at 9 positions), 27 with a mask per position
        self.num_offsets = 2 * KERNEL_POSITIONS * deform_num_groups
        num_masks = KERNEL_POSITIONS * deform_num_groups if deform_modulated else 0
        plain = self.conv2
        self.conv2_offset = Conv2d(
            plain.in_channels, self.num_offsets + num_masks, kernel_size=3, stride=plain.stride,
            padding=plain.padding, dilation=plain.dilation)
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)
        self.conv2 = DeformConv2d(
            plain.in_channels, plain.out_channels, kernel_size=3, stride=plain.stride,
            padding=plain.padding, dilation=plain.dilation, groups=plain.groups, bias=False,
            norm=plain.norm, deformable_groups=deform_num_groups)
        self.conv2.weight = plain.weight

    def offset_and_mask(self, x) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(offset, mask or None) for conv2 from its input x.

        detectron2 splits conv2_offset's output in three equal chunks and takes the first
        two as the offsets, the third through a sigmoid as the mask.
        """
        out = self.conv2_offset(x)
        if not self.deform_modulated:
            return out, None
        return out[:, :self.num_offsets], torch.sigmoid(out[:, self.num_offsets:])

    def forward(self, x):
        out = torch.relu_(self.conv1(x))
        offset, mask = self.offset_and_mask(out)
        out = torch.relu_(self.conv2(out, offset, mask))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return torch.relu_(out + shortcut)
