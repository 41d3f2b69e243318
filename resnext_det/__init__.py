"""resnext_det: ResNeXt (Xie et al., CVPR 2017) as a first-class detectron2 backbone.

`import resnext_det` registers in detectron2:
  BACKBONE_REGISTRY: build_resnext_backbone, build_resnext_fpn_backbone,
                     build_retinanet_resnext_fpn_backbone
  ROI_HEADS_REGISTRY: ResNeXtRes5ROIHeads
and nothing else (no dataset); `add_resnext_config(cfg)` adds the MODEL.RESNEXT keys.
The digits demo set is registered where it is used: `resnext_det.data.register_digits()`,
as tools/demo.py, tools/pretrain_then_detect.py and tools/train_net.py do.
"""
import warnings

with warnings.catch_warnings():
    # torch deprecates torch.jit.script (FutureWarning), which detectron2's box_regression
    # and fvcore's focal_loss call at import: four lines at every start that no user can act
    # on. Only these imports are quieted (tools import resnext_det first); a script of the
    # user's, or of export, still warns.
    warnings.filterwarnings("ignore", r"`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling  # noqa: F401
    import fvcore.nn  # noqa: F401

from . import modeling  # registers backbones and the C4 ROI head
from .config import ConfigError, add_resnext_config
from .modeling import Template, parse_template, resnext_classifier

__version__ = "0.1.0"
