"""Build the classifier a classification config describes; the one place that reads MODEL.*.

MODEL.ARCH "imagenet" builds through `resnext_det.modeling.build_resnext` with the keys
the detection builders read (checked by the same `resnext_block_args`), so its weights
are a detection backbone's: stem.*, res2.* .. res5.*, plus the classifier `linear.*`.
"""
from ..config.errors import ConfigError
from ..modeling.classifier import ResNeXtClassifier
from ..modeling.config_args import NORMS, resnext_block_args, resnext_node
from ..modeling.resnext import build_resnext
from .cifar_resnext import CifarTemplate, build_cifar_resnext, parse_cifar_template

ARCHS = ("imagenet", "cifar")


def _check_norm_device(cfg):
    if cfg.MODEL.RESNETS.NORM == "SyncBN" and cfg.MODEL.DEVICE == "cpu":
        raise ConfigError("MODEL.RESNETS.NORM", "SyncBN", "'naiveSyncBN' or 'BN' on the CPU",
                          "torch's SyncBatchNorm runs on CUDA only; detectron2's naiveSyncBN "
                          "all-reduces the batch statistics over gloo as well.")


def cifar_template(cfg):
    """The CifarTemplate of MODEL.RESNEXT.TEMPLATE, else of NUM_GROUPS / WIDTH_PER_GROUP."""
    name = resnext_node(cfg).TEMPLATE
    if name:
        return parse_cifar_template(name)
    r = cfg.MODEL.RESNETS
    return CifarTemplate(r.NUM_GROUPS, r.WIDTH_PER_GROUP)


def _cifar_model(cfg, num_classes):
    r, x = cfg.MODEL.RESNETS, resnext_node(cfg)
    if r.NORM not in NORMS or r.NORM == "FrozenBN":
        raise ConfigError("MODEL.RESNETS.NORM", r.NORM,
                          "one of ['BN', 'SyncBN', 'naiveSyncBN', 'GN']")
    if x.BLOCK_FORM not in ("a", "b", "c"):
        raise ConfigError("MODEL.RESNEXT.BLOCK_FORM", x.BLOCK_FORM, "one of ['a', 'b', 'c']")
    return build_cifar_resnext(cifar_template(cfg), num_classes=num_classes,
                               stem_out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM,
                               block_form=x.BLOCK_FORM, stride_in_1x1=r.STRIDE_IN_1X1,
                               zero_init_last=x.ZERO_INIT_RESIDUAL)


def _imagenet_model(cfg, num_classes):
    template, block_args = resnext_block_args(cfg)
    if block_args["norm"] == "FrozenBN":
        raise ConfigError("MODEL.RESNETS.NORM", "FrozenBN", "'BN', 'SyncBN', 'naiveSyncBN' or 'GN'",
                          "FrozenBN learns nothing; pretraining needs a trainable norm.")
    return build_resnext(template, num_classes=num_classes,
                         stem_out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
                         net_class=ResNeXtClassifier, **block_args)


def build_cls_model(cfg, num_classes):
    """A classifier returning logits (N, num_classes), on the CPU; checked config."""
    if cfg.MODEL.ARCH not in ARCHS:
        raise ConfigError("MODEL.ARCH", cfg.MODEL.ARCH, f"one of {list(ARCHS)}")
    _check_norm_device(cfg)
    build = _imagenet_model if cfg.MODEL.ARCH == "imagenet" else _cifar_model
    return build(cfg, num_classes)


def template_name(cfg):
    """'X50_32x4d' / 'X29_8x64d': the template the config builds."""
    if cfg.MODEL.ARCH == "cifar":
        return cifar_template(cfg).name
    return resnext_block_args(cfg)[0].name
