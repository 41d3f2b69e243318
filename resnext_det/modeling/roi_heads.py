"""The C4 ROI head of the paper's Faster R-CNN: res5 of the same ResNeXt, run per region.

In the ResNet-C4 setup (He et al. 2016; the ResNeXt paper's COCO experiment) res2..res4
are the shared feature map and res5, with its stride-2 first block, is the per-region
head after ROI pooling. detectron2's Res5ROIHeads does exactly this; we replace only the
res5 it builds with our block of the configured form and template.
"""
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import Res5ROIHeads
from torch import nn

from ..config.errors import ConfigError
from .config_args import check_features_produced, resnext_block_args
from .resnext import make_resnext_stage


@ROI_HEADS_REGISTRY.register()
class ResNeXtRes5ROIHeads(Res5ROIHeads):
    """Res5ROIHeads whose res5 is a ResNeXt stage (MODEL.RESNEXT.BLOCK_FORM, TEMPLATE).

    Built by detectron2's `build_roi_heads` when MODEL.ROI_HEADS.NAME is
    "ResNeXtRes5ROIHeads"; pair it with build_resnext_backbone and OUT_FEATURES ["res4"].
    Its res5 takes the same keys as the backbone's stages (template, block form, norm,
    stride placement, zero-init), so checkpoint names are detectron2's `roi_heads.res5.*`.
    With MODEL.MASK_ON (Mask R-CNN C4), Res5ROIHeads feeds the same per-region res5 output
    (7x7, 8 x RES2_OUT_CHANNELS channels) to the mask head, which upsamples it to 14x14:
    box and mask head share one res5 pass (tests/modeling/test_families.py trains it).
    """

    @classmethod
    def from_config(cls, cfg, input_shape):
        """
        Args:
            cfg: a detectron2 config with add_resnext_config's keys; MODEL.ROI_HEADS.*,
                MODEL.ROI_BOX_HEAD.* as for Res5ROIHeads, res5 from MODEL.RESNETS /
                MODEL.RESNEXT.
            input_shape (dict[str, ShapeSpec]): the backbone's output shapes; every
                MODEL.ROI_HEADS.IN_FEATURES must be among them (else a ConfigError).

        Returns:
            dict: Res5ROIHeads' constructor arguments, res5 built by _build_res5_block.
        """
        check_features_produced("MODEL.ROI_HEADS.IN_FEATURES", cfg.MODEL.ROI_HEADS.IN_FEATURES,
                                list(input_shape), "the backbone (MODEL.RESNETS.OUT_FEATURES)")
        return super().from_config(cfg, input_shape)

    @classmethod
    def _build_res5_block(cls, cfg):
        """(res5 as an nn.Sequential of blocks, its output channels = 8 x RES2_OUT_CHANNELS)."""
        dilation = cfg.MODEL.RESNETS.RES5_DILATION
        if dilation != 1:  # detectron2's Res5ROIHeads never reads the key: it trained undilated
            raise ConfigError("MODEL.RESNETS.RES5_DILATION", dilation, "1 with MODEL.ROI_HEADS."
                              "NAME 'ResNeXtRes5ROIHeads'", "Its res5 runs on each pooled "
                              "region, first block at stride 2, as detectron2's Res5ROIHeads "
                              "builds it (undilated, the key unread). A dilated res5 (DC5) is "
                              "the backbone's: RESNETS.OUT_FEATURES ['res5'] with "
                              "StandardROIHeads.")
        template, kwargs = resnext_block_args(cfg)
        res5_out = kwargs["res2_out_channels"] * 8  # res5 is 8x res2 (three doublings)
        blocks = make_resnext_stage(template, "res5", in_channels=res5_out // 2, **kwargs)
        return nn.Sequential(*blocks), res5_out
