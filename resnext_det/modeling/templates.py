"""ResNeXt templates as data: (depth, cardinality C, bottleneck width d).

The paper's template rules (Sec 3.1): blocks that produce maps of one size share their
hyper-parameters, and at each /2 downsampling the width is doubled. So a network is
fully described by its depth (blocks per stage), C, and the bottleneck width d of res2:
stage res{k} has C groups of width d * 2**(k-2), and output width 256 * 2**(k-2).
ResNet is the case C=1, d=64.
"""
import re
from dataclasses import dataclass

from ..config.errors import ConfigError, is_whole

# Blocks per stage res2..res5 (He et al. 2016, Table 1; the paper's Table 1 for 50).
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

_NAME = re.compile(r"^(?:R(\d+)|[RX](\d+)_(\d+)x(\d+)d)$")


def check_cardinality_and_width(cardinality, bottleneck_width):
    """C and d of a template given by MODEL.RESNETS keys: whole numbers >= 1."""
    if not is_whole(cardinality, 1):
        raise ConfigError("MODEL.RESNETS.NUM_GROUPS", cardinality,
                          "an integer >= 1 (1 -> ResNet; > 1 -> ResNeXt)")
    if not is_whole(bottleneck_width, 1):
        raise ConfigError("MODEL.RESNETS.WIDTH_PER_GROUP", bottleneck_width,
                          "an integer >= 1 (the paper's d; 64 for ResNet)")


@dataclass(frozen=True)
class Template:
    """A ResNeXt variant: depth, cardinality C and bottleneck width d (of res2)."""

    depth: int
    cardinality: int
    bottleneck_width: int

    def __post_init__(self):
        if self.depth not in STAGE_BLOCKS:
            raise ConfigError(
                "MODEL.RESNETS.DEPTH", self.depth, f"one of {sorted(STAGE_BLOCKS)}",
                "ResNeXt is built from bottleneck blocks; detectron2's own "
                "build_resnet_backbone builds the basic-block ResNet-18/34.")
        check_cardinality_and_width(self.cardinality, self.bottleneck_width)

    @property
    def name(self):
        """'R50' for ResNet, else the paper's notation: 'X101_32x8d'."""
        if self.cardinality == 1 and self.bottleneck_width == 64:
            return f"R{self.depth}"
        return f"X{self.depth}_{self.cardinality}x{self.bottleneck_width}d"

    @property
    def stage_blocks(self):
        return STAGE_BLOCKS[self.depth]


def parse_template(name):
    """'R50' -> Template(50, 1, 64); 'X50_32x4d' -> Template(50, 32, 4)."""
    match = _NAME.match(name)
    if match is None:
        raise ConfigError("MODEL.RESNEXT.TEMPLATE", name,
                          "'R<depth>' or 'X<depth>_<C>x<d>d', e.g. 'R50', 'X101_32x8d'")
    resnet_depth, depth, cardinality, width = match.groups()
    if resnet_depth is not None:
        return Template(int(resnet_depth), 1, 64)
    return Template(int(depth), int(cardinality), int(width))


# The paper's ImageNet settings. Table 3: ResNet-50/101 and the same-complexity ResNeXts;
# Table 4: 2x the complexity of ResNet-101.
TABLE3 = tuple(
    parse_template(f"X{depth}_{c}")
    for depth in (50, 101)
    for c in ("1x64d", "2x40d", "4x24d", "8x14d", "32x4d")
)
TABLE4 = (parse_template("X101_2x64d"), parse_template("X101_64x4d"))


def bottleneck_params(cardinality, width, channels=256):
    """Weights of one res2 block's transformations: C * (c*d + 3*3*d*d + d*c)."""
    return cardinality * (channels * width + 9 * width * width + width * channels)


def complexity_preserving_width(cardinality, channels=256, reference_width=64):
    """The paper's Table 2 rule: the d whose block is closest to ResNet's in parameters.

    With c=256 input/output channels, a ResNet-50 res2 block holds
    256*64 + 3*3*64*64 + 64*256 = 69,632 weights (the paper's "~70k"); C paths of width d
    hold C*(256*d + 9*d*d + d*256). Returns the d >= 1 minimizing the difference (the
    smaller d on a tie); reproduces C=1->64, 2->40, 4->24, 8->14, 32->4.
    """
    if cardinality < 1:
        raise ValueError(f"cardinality={cardinality} must be >= 1")
    target = bottleneck_params(1, reference_width, channels)
    candidates = range(1, reference_width + 1)
    return min(candidates, key=lambda d: (abs(bottleneck_params(cardinality, d, channels) - target), d))
