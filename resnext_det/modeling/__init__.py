"""ResNeXt modules and the builders that register them in detectron2."""
from . import backbone as _backbone  # registers the backbones
from . import roi_heads as _roi_heads  # registers ResNeXtRes5ROIHeads
from .backbone import (
    build_resnext_backbone,
    build_resnext_fpn_backbone,
    build_retinanet_resnext_fpn_backbone,
)
from .blocks import BLOCK_FORMS, ConcatPathsBottleneck, GroupedBottleneck, SummedPathsBottleneck
from .cifar import CifarTemplate, build_cifar_resnext, parse_cifar_template
from .classifier import ResNeXtClassifier, resnext_classifier
from .deform import DeformConv2d, DeformGroupedBottleneck
from .resnext import build_resnext, make_resnext_stage, make_resnext_stages
from .roi_heads import ResNeXtRes5ROIHeads
from .templates import (
    STAGE_BLOCKS,
    TABLE3,
    TABLE4,
    Template,
    complexity_preserving_width,
    parse_template,
)
