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
from .config_args import check_features_produced, check_fpn_dilation, resnext_backbone_args
from .resnext import STAGE_NAMES, build_resnext

# Levels each FPN builder adds above its last input: P6 (max pool); P6 and P7 (convs).
_TOP_LEVELS = {"build_resnext_fpn_backbone": 1, "build_retinanet_resnext_fpn_backbone": 2}


def output_features(model):
    """The names of the features our backbone MODEL.BACKBONE.NAME outputs, read off the
    `model` (cfg.MODEL) keys its builder reads; None for other backbones, and for FPN
    inputs that the builder itself refuses. detectron2's FPN calls level k "p{k}", k =
    log2 of its stride (res2..res5: strides 4..32)."""
    name = model.get("BACKBONE", {}).get("NAME")
    if name == "build_resnext_backbone":
        return list(model.RESNETS.OUT_FEATURES)
    inputs = list(model.get("FPN", {}).get("IN_FEATURES", ()))
    if name not in _TOP_LEVELS or not inputs or not set(inputs) <= set(STAGE_NAMES):
        return None
    levels = sorted(int(f[3:]) for f in inputs)
    top = [levels[-1] + i for i in range(1, _TOP_LEVELS[name] + 1)]
    return [f"p{k}" for k in levels + top]


@BACKBONE_REGISTRY.register()
def build_resnext_backbone(cfg, input_shape):
    """A ResNeXt backbone: stem and res2..res5, of which OUT_FEATURES are returned.

    C4 with MODEL.RESNETS.OUT_FEATURES ["res4"] (res5 then lives in the ROI head), DC5 with
    RES5_DILATION 2. Every key read is checked first (resnext_backbone_args): a bad value
    is a ConfigError naming the key.

    Args:
        cfg: a detectron2 config with add_resnext_config's keys. Read: MODEL.RESNETS.{DEPTH,
            NUM_GROUPS, WIDTH_PER_GROUP, STRIDE_IN_1X1, NORM, RES5_DILATION, OUT_FEATURES,
            STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, DEFORM_ON_PER_STAGE, DEFORM_MODULATED,
            DEFORM_NUM_GROUPS}, MODEL.BACKBONE.FREEZE_AT and
            MODEL.RESNEXT.{TEMPLATE, BLOCK_FORM, ZERO_INIT_RESIDUAL}.
        input_shape (ShapeSpec): the input; its `channels` (3 for images) is used.

    Returns:
        ResNet: detectron2's ResNet with ResNeXt stages; forward returns {name: feature}
        for OUT_FEATURES, and `template` holds the resolved Template.
    """
    template, kwargs = resnext_backbone_args(cfg)
    return build_resnext(template, in_channels=input_shape.channels, **kwargs)


def _fpn(cfg, bottom_up, top_block):
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    produced = list(bottom_up.output_shape())
    if not in_features:  # detectron2's get_cfg() (its C4 setup): FPN stopped on a bare assert
        raise ConfigError("MODEL.FPN.IN_FEATURES", in_features, "one or more of the features "
                          f"MODEL.RESNETS.OUT_FEATURES produces: {produced}",
                          "An FPN config sets both, e.g. configs/Base-RCNN-FPN-ResNeXt.yaml "
                          "(res2..res5) or detectron2's COCO-Detection/*_FPN_*.yaml.")
    check_features_produced("MODEL.FPN.IN_FEATURES", in_features,
                            produced, "MODEL.RESNETS.OUT_FEATURES")
    check_fpn_dilation("MODEL.RESNETS.RES5_DILATION", cfg.MODEL.RESNETS.RES5_DILATION, in_features)
    return FPN(bottom_up=bottom_up, in_features=in_features,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM,
               top_block=top_block, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_resnext_fpn_backbone(cfg, input_shape):
    """FPN (Lin et al. 2017) over a ResNeXt, with P6 = max pool of P5 (Faster R-CNN).

    Args:
        cfg: as build_resnext_backbone, plus MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM,
            FUSE_TYPE}; IN_FEATURES must be among MODEL.RESNETS.OUT_FEATURES (not empty),
            and RES5_DILATION 1 when they include res5 (each FPN level is at twice the
            stride of the one below).
        input_shape (ShapeSpec): the input.

    Returns:
        FPN: detectron2's FPN, outputs p2..p6 for IN_FEATURES res2..res5; the ResNeXt is
        its `bottom_up`.
    """
    bottom_up = build_resnext_backbone(cfg, input_shape)
    return _fpn(cfg, bottom_up, LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_resnext_fpn_backbone(cfg, input_shape):
    """RetinaNet's FPN over a ResNeXt: P6 = 3x3/2 conv of res5, P7 = 3x3/2 conv of ReLU(P6).

    Args:
        cfg: as build_resnext_fpn_backbone; MODEL.RESNETS.OUT_FEATURES must include "res5".
        input_shape (ShapeSpec): the input.

    Returns:
        FPN: detectron2's FPN with LastLevelP6P7, outputs p3..p7 for IN_FEATURES res3..res5.
    """
    bottom_up = build_resnext_backbone(cfg, input_shape)
    shapes = bottom_up.output_shape()
    if "res5" not in shapes:
        raise ConfigError("MODEL.RESNETS.OUT_FEATURES", list(shapes), "a list that includes 'res5'",
                          "RetinaNet computes P6 and P7 from res5.")
    res5_channels = shapes["res5"].channels
    top = LastLevelP6P7(res5_channels, cfg.MODEL.FPN.OUT_CHANNELS)
    return _fpn(cfg, bottom_up, top)
