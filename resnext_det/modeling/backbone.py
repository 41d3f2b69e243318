"""ResNeXt backbones registered in detectron2's BACKBONE_REGISTRY.

  build_resnext_backbone               plain / C4 (OUT_FEATURES ["res4"]) / DC5 / C5
  build_resnext_fpn_backbone           FPN over res2..res5, P6 by max pool (Faster R-CNN)
  build_retinanet_resnext_fpn_backbone FPN over res3..res5, P6/P7 by convs (RetinaNet)

They read detectron2's own MODEL.RESNETS / MODEL.FPN keys, so detectron2's ResNeXt
configs run with them by changing only MODEL.BACKBONE.NAME, and they build the same
module tree (hence the same checkpoints) as detectron2's ResNet builders when
MODEL.RESNEXT.BLOCK_FORM is "c".
"""
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ..config.errors import ConfigError
from .config_args import check_features_produced, resnext_backbone_args
from .resnext import build_resnext


@BACKBONE_REGISTRY.register()
def build_resnext_backbone(cfg, input_shape):
    """A ResNeXt `ResNet` backbone from MODEL.RESNETS / MODEL.RESNEXT."""
    template, kwargs = resnext_backbone_args(cfg)
    return build_resnext(template, in_channels=input_shape.channels, **kwargs)


def _fpn(cfg, bottom_up, top_block):
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    check_features_produced("MODEL.FPN.IN_FEATURES", in_features,
                            list(bottom_up.output_shape()), "MODEL.RESNETS.OUT_FEATURES")
    return FPN(bottom_up=bottom_up, in_features=in_features,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM,
               top_block=top_block, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_resnext_fpn_backbone(cfg, input_shape):
    """FPN (Lin et al. 2017) over a ResNeXt, with P6 = max pool of P5."""
    bottom_up = build_resnext_backbone(cfg, input_shape)
    return _fpn(cfg, bottom_up, LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_resnext_fpn_backbone(cfg, input_shape):
    """RetinaNet's FPN over a ResNeXt: P6 = 3x3/2 conv of res5, P7 = 3x3/2 conv of ReLU(P6)."""
    bottom_up = build_resnext_backbone(cfg, input_shape)
    shapes = bottom_up.output_shape()
    if "res5" not in shapes:
        raise ConfigError("MODEL.RESNETS.OUT_FEATURES", list(shapes), "a list that includes 'res5'",
                          "RetinaNet computes P6 and P7 from res5.")
    res5_channels = shapes["res5"].channels
    top = LastLevelP6P7(res5_channels, cfg.MODEL.FPN.OUT_CHANNELS)
    return _fpn(cfg, bottom_up, top)
