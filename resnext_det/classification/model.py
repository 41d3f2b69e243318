"""The classifier a classification config describes; the one place that reads MODEL.*.

MODEL.ARCH "imagenet" builds through `build_resnext` from the keys the detection builders
read (checked by the same `resnext_block_args`): its weights are a detection backbone's,
stem.*, res2.* .. res5.*, plus the classifier `linear.*`.
"""
import torch.nn.functional as F
from detectron2.utils.events import get_event_storage

from ..config.errors import check_choice
from ..config.pretraining_checks import check_pretraining_model
from ..modeling.classifier import ResNeXtClassifier
from ..modeling.config_args import resnext_block_args, resnext_node
from ..modeling.resnext import build_resnext
from ..modeling.cifar import CifarTemplate, build_cifar_resnext, parse_cifar_template

class ClsModel(ResNeXtClassifier):
    """ResNeXtClassifier on (images, labels) batches, in SimpleTrainer's contract: training ->
    {"loss_cls": cross-entropy} (and "train/top1_err" in the event storage); eval, or images
    alone -> the logits (N, classes)."""

    def forward(self, batch):
        images, labels = batch if isinstance(batch, (list, tuple)) else (batch, None)
        logits = super().forward(images.to(self.linear.weight.device, non_blocking=True))
        if not self.training or labels is None:
            return logits
        labels = labels.to(logits.device, non_blocking=True)
        hits = (logits.detach().argmax(dim=1) == labels).float().mean()
        get_event_storage().put_scalar("train/top1_err", 100 * (1 - hits.item()))
        return {"loss_cls": F.cross_entropy(logits, labels)}


def cifar_template(cfg):
    """The CifarTemplate of MODEL.RESNEXT.TEMPLATE, else of NUM_GROUPS / WIDTH_PER_GROUP."""
    name, r = resnext_node(cfg).TEMPLATE, cfg.MODEL.RESNETS
    return parse_cifar_template(name) if name else CifarTemplate(r.NUM_GROUPS, r.WIDTH_PER_GROUP)


def _cifar_model(cfg, num_classes):
    r, x = cfg.MODEL.RESNETS, resnext_node(cfg)
    check_choice("MODEL.RESNEXT.BLOCK_FORM", x.BLOCK_FORM, ("a", "b", "c"))
    return build_cifar_resnext(cifar_template(cfg), num_classes=num_classes,
                               stem_out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM,
                               block_form=x.BLOCK_FORM, stride_in_1x1=r.STRIDE_IN_1X1,
                               zero_init_last=x.ZERO_INIT_RESIDUAL, net_class=ClsModel)


def _imagenet_model(cfg, num_classes):
    template, block_args = resnext_block_args(cfg)
    return build_resnext(template, num_classes=num_classes, net_class=ClsModel,
                         stem_out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, **block_args)


def build_cls_model(cfg, num_classes):
    """The ClsModel (on the CPU) that MODEL.* describes, the config checked.

    Args:
        num_classes (int): classifier outputs.
    Returns:
        ClsModel: "imagenet" -> the detection backbone's stem and stages; "cifar" -> ResNeXt-29.
    """
    check_pretraining_model(cfg)
    return (_imagenet_model if cfg.MODEL.ARCH == "imagenet" else _cifar_model)(cfg, num_classes)


def template_name(cfg):
    """'X50_32x4d' / 'X29_8x64d': the template the config builds."""
    if cfg.MODEL.ARCH == "cifar":
        return cifar_template(cfg).name
    return resnext_block_args(cfg)[0].name
