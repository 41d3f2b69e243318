"""resnext_det: ResNeXt (Xie et al., CVPR 2017) as a first-class detectron2 backbone.

`import resnext_det` registers in detectron2:
  BACKBONE_REGISTRY: build_resnext_backbone, build_resnext_fpn_backbone,
                     build_retinanet_resnext_fpn_backbone
  ROI_HEADS_REGISTRY: ResNeXtRes5ROIHeads
and nothing else (no dataset); `add_resnext_config(cfg)` adds the MODEL.RESNEXT keys.
The digits demo set is registered where it is used: `resnext_det.data.register_digits()`,
as tools/demo.py, tools/pretrain_then_detect.py and tools/train_net.py do.
"""
from . import modeling  # registers backbones and the C4 ROI head
from .config import ConfigError, add_resnext_config
from .modeling import Template, parse_template, resnext_classifier

__version__ = "0.1.0"
