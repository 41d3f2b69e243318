"""ResNeXt-29 for CIFAR (the paper's Sec 5.3): 3x3 stem, three stages of three blocks.

The paper's CIFAR network: a 3x3 convolution with 64 outputs, then three stages of three
bottleneck blocks with output widths 256, 512 and 1024, the first block of the last two
stages downsampling by 2 (stride in the 3x3, as in fb.resnet.torch), global average
pooling and a fully-connected layer: 1 + 3 * 3 * 3 + 1 = 29 layers. As in the ImageNet
templates, the bottleneck width of stage k is C * d * 2**k (paper Table 7: "8x64d" has
paths of width 64 in the first stage). ResNeXt-29 8x64d has 34.4M and 16x64d 68.1M
parameters in the paper; tests/classification/test_cifar_resnext.py checks ours.

The stages are built by `ResNet.make_stage` from our aggregated blocks and named
res2..res4 by detectron2's `ResNet`, so checkpoints read like the ImageNet ones.
"""
import re
from dataclasses import dataclass

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone.resnet import ResNet

from ..config.errors import ConfigError
from ..modeling.blocks import BLOCK_FORMS
from ..modeling.classifier import ResNeXtClassifier

CIFAR_DEPTH = 29
CIFAR_BLOCKS = (3, 3, 3)  # blocks per stage: 3 stages * 3 blocks * 3 layers + stem + fc = 29
CIFAR_STAGE_WIDTHS = (256, 512, 1024)  # output width of each stage
_NAME = re.compile(r"^X29_(\d+)x(\d+)d$")


@dataclass(frozen=True)
class CifarTemplate:
    """ResNeXt-29 with cardinality C and bottleneck width d (of the first stage)."""

    cardinality: int
    bottleneck_width: int

    @property
    def name(self):
        return f"X{CIFAR_DEPTH}_{self.cardinality}x{self.bottleneck_width}d"


def parse_cifar_template(name):
    """'X29_8x64d' -> CifarTemplate(8, 64)."""
    match = _NAME.match(name)
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError("MODEL.RESNEXT.TEMPLATE", name,
                          "'X29_<C>x<d>d' with MODEL.ARCH='cifar', e.g. 'X29_8x64d', "
                          "'X29_16x64d' (the paper's Table 7)")
    return CifarTemplate(int(match.group(1)), int(match.group(2)))


class CifarStem(CNNBlockBase):
    """The CIFAR stem: 3x3 conv (stride 1), norm, ReLU; no pooling."""

    def __init__(self, in_channels=3, out_channels=64, norm="BN"):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                            bias=False, norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x):
        return F.relu_(self.conv1(x))


def make_cifar_stages(template, *, stem_out_channels=64, block_form="c", norm="BN",
                      stride_in_1x1=False, zero_init_last=False):
    """The three stages: widths 256/512/1024, paths C x d*2**k, /2 at stages 2 and 3."""
    stages, in_channels = [], stem_out_channels
    for k, (blocks, out_channels) in enumerate(zip(CIFAR_BLOCKS, CIFAR_STAGE_WIDTHS)):
        stages.append(ResNet.make_stage(
            BLOCK_FORMS[block_form], blocks, in_channels=in_channels, out_channels=out_channels,
            stride_per_block=[1 if k == 0 else 2] + [1] * (blocks - 1),
            cardinality=template.cardinality, bottleneck_width=template.bottleneck_width * 2**k,
            norm=norm, stride_in_1x1=stride_in_1x1, zero_init_last=zero_init_last))
        in_channels = out_channels
    return stages


def build_cifar_resnext(template, *, num_classes=10, stem_out_channels=64, norm="BN",
                        **stage_kwargs):
    """A ResNeXt-29 classifier (logits out) for a CifarTemplate or a name ('X29_8x64d')."""
    if isinstance(template, str):
        template = parse_cifar_template(template)
    stem = CifarStem(3, stem_out_channels, norm=norm)
    stages = make_cifar_stages(template, stem_out_channels=stem_out_channels, norm=norm,
                               **stage_kwargs)
    net = ResNeXtClassifier(stem, stages, num_classes=num_classes)
    net.template = template
    return net
