"""The aggregated residual block, y = x + sum_{i=1..C} T_i(x), in the paper's three forms.

Figure 3 of the paper draws three equivalent blocks:
  (a) C explicit paths T_i = 1x1(d), 3x3(d), 1x1, whose outputs are summed;
  (b) C paths of 1x1(d), 3x3(d), concatenated ("early concatenation"), then one 1x1;
  (c) 1x1(C*d), grouped 3x3 (groups=C), 1x1: one layer per step.
The paper trains form (c) with a norm right after each convolution (Sec 4). The norms
are per channel (BN, FrozenBN, SyncBN), so a norm over C*d channels splits exactly into
C norms over d channels, and the norm after the last 1x1 of (c) becomes, in (a), one norm
applied after the sum of the paths. With that placement the three forms compute the same
function; `resnext_det.checkpoint.block_forms` maps weights between them.

All three take the same keyword arguments so that `ResNet.make_stage` builds any of them.
"""
import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone.resnet import BottleneckBlock
from torch import nn


def _last_norm(block):
    """The norm whose scale ZERO_INIT_RESIDUAL zeroes: the one before the shortcut add."""
    return block.conv3_norm if isinstance(block, SummedPathsBottleneck) else block.conv3.norm


def _zero_init_last_norm(block):
    norm = _last_norm(block)
    if not isinstance(getattr(norm, "weight", None), torch.Tensor):
        raise ValueError(f"zero_init_last needs a norm with a scale; got {type(norm).__name__}")
    nn.init.zeros_(norm.weight)


class GroupedBottleneck(BottleneckBlock):
    """Form (c): 1x1, norm, ReLU, grouped 3x3 (groups=C), norm, ReLU, 1x1, norm; add, ReLU.

    detectron2's BottleneckBlock with num_groups=C, so its parameter names (conv1, conv2,
    conv3, shortcut, each with .norm) and checkpoints are shared with detectron2.
    """

    def __init__(self, in_channels, out_channels, *, cardinality, bottleneck_width, stride=1,
                 norm="BN", stride_in_1x1=False, dilation=1, zero_init_last=False):
        """
        Args:
            cardinality (int): C, the number of paths (groups of the 3x3).
            bottleneck_width (int): d, the width of each path.
            stride_in_1x1 (bool): put the stride in the first 1x1 (MSRA / Caffe2
                Detectron's ResNet) rather than in the 3x3 (fb.resnet.torch, the paper's
                ResNeXt, torchvision).
            zero_init_last (bool): start the last norm's scale at 0 (block = identity).
        """
        super().__init__(in_channels, out_channels, bottleneck_channels=cardinality * bottleneck_width,
                         stride=stride, num_groups=cardinality, norm=norm,
                         stride_in_1x1=stride_in_1x1, dilation=dilation)
        self.cardinality, self.bottleneck_width = cardinality, bottleneck_width
        if zero_init_last:
            _zero_init_last_norm(self)


class Path(nn.Module):
    """One transformation T_i: 1x1(d), norm, ReLU, 3x3(d), norm, ReLU[, 1x1 to out, no norm]."""

    def __init__(self, in_channels, width, *, out_channels=None, stride_1x1=1, stride_3x3=1,
                 dilation=1, norm="BN"):
        super().__init__()
        self.conv1 = Conv2d(in_channels, width, kernel_size=1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, width))
        self.conv2 = Conv2d(width, width, kernel_size=3, stride=stride_3x3, padding=dilation,
                            dilation=dilation, bias=False, norm=get_norm(norm, width))
        self.conv3 = None
        if out_channels is not None:
            self.conv3 = Conv2d(width, out_channels, kernel_size=1, bias=False)
        for layer in (self.conv1, self.conv2, self.conv3):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x):
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        return x if self.conv3 is None else self.conv3(x)


class _PathsBottleneck(CNNBlockBase):
    """Shared part of forms (a) and (b): the shortcut, the paths and the residual add."""

    def __init__(self, in_channels, out_channels, *, cardinality, bottleneck_width, stride=1,
                 norm="BN", stride_in_1x1=False, dilation=1, path_out_channels=None):
        super().__init__(in_channels, out_channels, stride)
        self.cardinality, self.bottleneck_width = cardinality, bottleneck_width
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, kernel_size=1, stride=stride,
                                   bias=False, norm=get_norm(norm, out_channels))
            weight_init.c2_msra_fill(self.shortcut)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.paths = nn.ModuleList(
            Path(in_channels, bottleneck_width, out_channels=path_out_channels,
                 stride_1x1=stride_1x1, stride_3x3=stride_3x3, dilation=dilation, norm=norm)
            for _ in range(cardinality)
        )

    def aggregate(self, x):
        raise NotImplementedError

    def forward(self, x):
        out = self.aggregate(x)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


class SummedPathsBottleneck(_PathsBottleneck):
    """Form (a): C paths 1x1(d), 3x3(d), 1x1(out); summed; norm; add shortcut; ReLU."""

    def __init__(self, in_channels, out_channels, *, zero_init_last=False, norm="BN", **kwargs):
        super().__init__(in_channels, out_channels, norm=norm, path_out_channels=out_channels,
                         **kwargs)
        self.conv3_norm = get_norm(norm, out_channels)
        if zero_init_last:
            _zero_init_last_norm(self)

    def aggregate(self, x):
        out = self.paths[0](x)
        for i, path in enumerate(self.paths):  # not paths[1:]: TorchScript cannot slice a ModuleList
            if i > 0:
                out = out + path(x)
        return self.conv3_norm(out)


class ConcatPathsBottleneck(_PathsBottleneck):
    """Form (b): C paths 1x1(d), 3x3(d); concatenated; 1x1(out), norm; add shortcut; ReLU."""

    def __init__(self, in_channels, out_channels, *, zero_init_last=False, norm="BN", **kwargs):
        super().__init__(in_channels, out_channels, norm=norm, **kwargs)
        width = self.cardinality * self.bottleneck_width
        self.conv3 = Conv2d(width, out_channels, kernel_size=1, bias=False,
                            norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv3)
        if zero_init_last:
            _zero_init_last_norm(self)

    def aggregate(self, x):
        return self.conv3(torch.cat([path(x) for path in self.paths], dim=1))


# MODEL.RESNEXT.BLOCK_FORM -> block class.
BLOCK_FORMS = {"a": SummedPathsBottleneck, "b": ConcatPathsBottleneck, "c": GroupedBottleneck}
