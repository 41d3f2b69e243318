"""ResNeXt for detectron2's LazyConfig: `L(ResNeXt)(template="X101_32x8d", ...)`.

detectron2's Python configs build a model from keyword-only calls (`L(ResNet)(stem=...,
stages=...)` inside `L(FPN)(bottom_up=...)`). `ResNeXt` is that call for our backbone. It
builds through the registered yacs builder: its arguments are written into the
MODEL.RESNETS / MODEL.RESNEXT keys they stand for (ARG_KEYS), and
`build_resnext_backbone` checks them and builds. So both config systems share one set of
checks and one builder, and give the same module tree, hence the same checkpoints
(tests/engine/test_lazy.py builds both). A bad argument is the yacs check's ConfigError
with the argument's name in place of the key.
"""
import re

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from omegaconf import ListConfig

from ..config.defaults import add_resnext_config
from ..config.errors import ConfigError
from .backbone import build_resnext_backbone
from .config_args import TEMPLATE_KEYS, resnext_backbone_args

# ResNeXt's argument -> the yacs key it stands for.
ARG_KEYS = {
    "template": "MODEL.RESNEXT.TEMPLATE",
    "out_features": "MODEL.RESNETS.OUT_FEATURES",
    "freeze_at": "MODEL.BACKBONE.FREEZE_AT",
    "norm": "MODEL.RESNETS.NORM",
    "stride_in_1x1": "MODEL.RESNETS.STRIDE_IN_1X1",
    "stem_out_channels": "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "res2_out_channels": "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "res5_dilation": "MODEL.RESNETS.RES5_DILATION",
    "block_form": "MODEL.RESNEXT.BLOCK_FORM",
    "zero_init_residual": "MODEL.RESNEXT.ZERO_INIT_RESIDUAL",
    "deform_on_per_stage": "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
    "deform_modulated": "MODEL.RESNETS.DEFORM_MODULATED",
    "deform_num_groups": "MODEL.RESNETS.DEFORM_NUM_GROUPS",
}


def rename_keys(text, names):
    """`text` with each key of `names` replaced by its value, longer keys first; an override
    it asks for in the yacs command line's form ("Set MODEL.X 3") in a .py config's
    ("Set model.x=3": LazyConfig's overrides are key=value)."""
    for old in sorted(names, key=len, reverse=True):
        text = re.sub(rf"\bSet {re.escape(old)} (?=[-\d\[('\"])", f"Set {names[old]}=", text)
        text = text.replace(old, names[old])
    return text


def renamed(error, names, value=None):
    """`error` (a UserError) with the config keys in its message renamed by `names`.

    The lazy path reuses the yacs checks on a yacs view of its config; this puts the lazy
    keys (e.g. "model.backbone.bottom_up.norm") in the message in place of the yacs ones.

    Args:
        error (UserError): a ConfigError (key, value, expected, hint) or any UserError
            whose message names keys.
        names (dict[str, str]): yacs key -> lazy key.
        value: for a ConfigError, the value to report instead of error.value (None: keep).

    Returns:
        UserError: a new error of the same type.
    """
    if not isinstance(error, ConfigError):
        try:
            return type(error)(rename_keys(str(error), names))
        except TypeError:  # a type whose constructor takes more than the message: kept as it is
            return error
    head = f"{error.key}={error.value!r} is not valid: expected {error.expected}."
    hint = str(error)[len(head):].strip() if str(error).startswith(head) else ""
    return ConfigError(rename_keys(error.key, names), error.value if value is None else value,
                       rename_keys(error.expected, names), rename_keys(hint, names))


def arg_names(prefix=""):
    """{yacs key: prefix + argument} for ResNeXt's arguments, for `renamed`."""
    names = {key: prefix + arg for arg, key in ARG_KEYS.items()}
    # a template sets these: an error on one of them is an error of the template
    names.update({f"MODEL.RESNETS.{key}": prefix + "template" for key in TEMPLATE_KEYS})
    return names


def resnext_cfg(prefix="", **kwargs):
    """A yacs config (get_cfg + add_resnext_config) holding ResNeXt's `kwargs` in their keys.

    An argument ResNeXt does not take is a ConfigError naming `prefix` + it.
    """
    for arg in kwargs:
        if arg not in ARG_KEYS:
            raise ConfigError(prefix + arg, kwargs[arg],
                              f"an argument of ResNeXt: {list(ARG_KEYS)}")
    cfg = add_resnext_config(get_cfg())
    for arg, value in kwargs.items():
        *parents, last = ARG_KEYS[arg].split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[last] = list(value) if isinstance(value, (list, tuple, ListConfig)) else value
    return cfg


def check_resnext_args(prefix="", **kwargs):
    """Check ResNeXt's arguments as its builder does; a ConfigError names `prefix` + argument.

    The lazy engine calls it on each ResNeXt node of a config before anything is built,
    with prefix "model.backbone.bottom_up.", so that the error names the override to fix.

    Returns:
        CfgNode: the yacs view of the arguments (resnext_cfg), checked.
    """
    cfg = resnext_cfg(prefix, **kwargs)
    try:
        resnext_backbone_args(cfg)
    except ConfigError as e:
        value = kwargs.get("template") if e.key.rpartition(".")[2] in TEMPLATE_KEYS else None
        raise renamed(e, arg_names(prefix), value=value) from None
    return cfg


def ResNeXt(*, template, in_channels=3, out_features=("res5",), freeze_at=0,  # noqa: N802
            norm="FrozenBN", stride_in_1x1=False, stem_out_channels=64, res2_out_channels=256,
            res5_dilation=1, block_form="c", zero_init_residual=False,
            deform_on_per_stage=(False, False, False, False), deform_modulated=False,
            deform_num_groups=1):
    """A ResNeXt backbone from keyword arguments: `L(ResNeXt)(...)` in a Python config.

    Named like the class it stands for, as detectron2's configs call `L(ResNet)`.

    Args:
        template (str): "X101_32x8d", "X50_32x4d", "R50", ...: depth, cardinality C and
            bottleneck width d (MODEL.RESNEXT.TEMPLATE).
        in_channels (int): input channels (3 for images).
        out_features (list[str]): of "stem", "res2".."res5"; an FPN takes res2..res5.
        freeze_at (int): 0 trains all; 1 freezes the stem; k freezes stem and res2..res{k}.
        norm (str): "FrozenBN", "BN", "SyncBN", "naiveSyncBN", "nnSyncBN" or "GN".
        stride_in_1x1 (bool): False: the stride in the 3x3 (the paper's, torchvision's);
            True: in the first 1x1 (MSRA's ResNet, detectron2's default).
        stem_out_channels, res2_out_channels (int): 64 and 256 in the paper.
        res5_dilation (int): 1, or 2 for a stride-16 res5 (DC5).
        block_form (str): the paper's Figure 3 form: "a", "b" or "c" (grouped conv).
        zero_init_residual (bool): the last norm of each block starts at scale 0.
        deform_on_per_stage, deform_modulated, deform_num_groups: MODEL.RESNETS.DEFORM_*.

    Returns:
        ResNet: detectron2's ResNet with ResNeXt stages, built by `build_resnext_backbone`
        (the same module names); `template` holds the resolved Template.
    """
    cfg = check_resnext_args(
        template=template, out_features=out_features, freeze_at=freeze_at, norm=norm,
        stride_in_1x1=stride_in_1x1, stem_out_channels=stem_out_channels,
        res2_out_channels=res2_out_channels, res5_dilation=res5_dilation, block_form=block_form,
        zero_init_residual=zero_init_residual, deform_on_per_stage=deform_on_per_stage,
        deform_modulated=deform_modulated, deform_num_groups=deform_num_groups)
    return build_resnext_backbone(cfg, ShapeSpec(channels=in_channels))
