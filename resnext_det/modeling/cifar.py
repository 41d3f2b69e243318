"""ResNeXt-29 for CIFAR (the paper's Sec 5.3): 3x3 stem, three stages of three blocks.

A 3x3 convolution with 64 outputs, three stages of three bottleneck blocks with outputs
256, 512 and 1024 (the first block of the last two downsampling by 2, stride in the 3x3
as in fb.resnet.torch), global average pooling and a fully-connected layer: 1 + 3 * 3 * 3
+ 1 = 29 layers. Paths of stage k are d * 2**k wide, as in the ImageNet templates (Table
7: "8x64d" has paths of width 64 in the first stage); 8x64d has 34.4M and 16x64d 68.1M
parameters in the paper (tests/classification/test_model_and_solver.py checks ours).
The stages are the ImageNet builder's (`make_resnext_stages`), named res2..res4 by
detectron2's `ResNet`, so checkpoints read like the ImageNet ones.
"""
import re
from dataclasses import dataclass

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, get_norm

from ..config.errors import ConfigError
from .classifier import ResNeXtClassifier
from .resnext import make_resnext_stages
from .templates import check_cardinality_and_width

_NAME = re.compile(r"^X29_(\d+)x(\d+)d$")


@dataclass(frozen=True)
class CifarTemplate:
    """ResNeXt-29 with cardinality C and bottleneck width d (of the first stage)."""

    cardinality: int
    bottleneck_width: int
    stage_blocks = (3, 3, 3)  # 3 stages * 3 blocks * 3 layers + stem + fc = 29

    def __post_init__(self):
        check_cardinality_and_width(self.cardinality, self.bottleneck_width)

    @property
    def name(self):
        return f"X29_{self.cardinality}x{self.bottleneck_width}d"


def parse_cifar_template(name):
    """'X29_8x64d' -> CifarTemplate(8, 64)."""
    match = _NAME.match(name)
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError("MODEL.RESNEXT.TEMPLATE", name, "'X29_<C>x<d>d' with MODEL.ARCH="
                          "'cifar', e.g. 'X29_8x64d', 'X29_16x64d' (the paper's Table 7)")
    return CifarTemplate(int(match.group(1)), int(match.group(2)))


class CifarStem(CNNBlockBase):
    """The CIFAR stem: 3x3 conv (stride 1), norm, ReLU; no pooling."""

    def __init__(self, in_channels=3, out_channels=64, norm="BN"):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x):
        return F.relu_(self.conv1(x))


def build_cifar_resnext(template, *, num_classes=10, stem_out_channels=64, norm="BN",
                        net_class=ResNeXtClassifier, **block_kwargs):
    """A ResNeXt-29 classifier (`net_class`) for a CifarTemplate or a name ('X29_8x64d').

    Args:
        block_kwargs: block_form, stride_in_1x1, zero_init_last of `make_resnext_stages`.
    """
    if isinstance(template, str):
        template = parse_cifar_template(template)
    stages = make_resnext_stages(template, num_stages=3, stem_out_channels=stem_out_channels,
                                 res2_out_channels=256, norm=norm, **block_kwargs)
    net = net_class(CifarStem(3, stem_out_channels, norm=norm), stages, num_classes=num_classes)
    net.template = template
    return net
