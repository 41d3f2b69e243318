"""Read and check the config keys that shape a ResNeXt, for the registered builders.

This is the only place that reads MODEL.RESNETS / MODEL.RESNEXT; modules take keyword
arguments. Every bad value raises a ConfigError naming the key and what would work.
"""
from ..config.defaults import resnext_defaults
from ..config.errors import ConfigError, check_bool, check_choice, check_whole
from .blocks import BLOCK_FORMS
from .templates import Template, parse_template

# detectron2's defaults for the keys a template also sets (config/defaults.py there).
_D2_DEFAULTS = {"DEPTH": 50, "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64}
# MODEL.RESNETS keys a template sets -> its Template field
TEMPLATE_KEYS = {"DEPTH": "depth", "NUM_GROUPS": "cardinality", "WIDTH_PER_GROUP": "bottleneck_width"}
# get_norm names whose statistics are per channel, which forms (a) and (b) need.
PER_CHANNEL_NORMS = ("FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN")
NORMS = PER_CHANNEL_NORMS + ("GN",)
GN_GROUPS = 32  # detectron2's get_norm("GN", c) is GroupNorm(32, c)
FEATURES = ("stem", "res2", "res3", "res4", "res5")


def resnext_node(cfg):
    """MODEL.RESNEXT, or its defaults when the config never called add_resnext_config."""
    return cfg.MODEL.RESNEXT if "RESNEXT" in cfg.MODEL else resnext_defaults()


def resolve_template(cfg):
    """The Template a config asks for: MODEL.RESNEXT.TEMPLATE, else the RESNETS keys."""
    r = cfg.MODEL.RESNETS
    name = resnext_node(cfg).TEMPLATE
    if not name:
        return Template(r.DEPTH, r.NUM_GROUPS, r.WIDTH_PER_GROUP)
    template = parse_template(name)
    for key, field in TEMPLATE_KEYS.items():
        value, wanted = r[key], getattr(template, field)
        if value not in (wanted, _D2_DEFAULTS[key]):
            raise ConfigError(
                f"MODEL.RESNETS.{key}", value, f"{wanted} (from MODEL.RESNEXT.TEMPLATE={name!r})",
                "Set either the template or MODEL.RESNETS.DEPTH/NUM_GROUPS/WIDTH_PER_GROUP.")
    return template


def _check_gn_widths(template, stem_out, res2_out, norm):
    if norm != "GN":
        return
    widths = {"MODEL.RESNETS.STEM_OUT_CHANNELS": stem_out}
    for k in range(4):
        widths[f"res{k + 2} bottleneck width C*d*2^{k}"] = (
            template.cardinality * template.bottleneck_width * 2**k)
        widths[f"res{k + 2} output width RES2_OUT_CHANNELS*2^{k}"] = res2_out * 2**k
    for what, width in widths.items():
        if width % GN_GROUPS:
            raise ConfigError("MODEL.RESNETS.NORM", norm,
                              f"a norm that fits width {width} ({what})",
                              f"GN uses {GN_GROUPS} groups, so every width must be divisible "
                              f"by {GN_GROUPS}; use BN/SyncBN or another template.")


def _check_norm(norm, form, zero_init, template, stem_out, res2_out):
    check_whole("MODEL.RESNETS.STEM_OUT_CHANNELS", stem_out, 1)  # torch: a bare RuntimeError
    check_whole("MODEL.RESNETS.RES2_OUT_CHANNELS", res2_out, 1)
    check_choice("MODEL.RESNETS.NORM", norm, NORMS)
    if form != "c" and norm not in PER_CHANNEL_NORMS:
        raise ConfigError("MODEL.RESNEXT.BLOCK_FORM", form, "'c' when MODEL.RESNETS.NORM='GN'",
                          "Forms (a)/(b) split the norm per path, which is exact only for "
                          f"per-channel norms {list(PER_CHANNEL_NORMS)}.")
    if zero_init and norm == "FrozenBN":
        raise ConfigError("MODEL.RESNEXT.ZERO_INIT_RESIDUAL", True,
                          "False when MODEL.RESNETS.NORM='FrozenBN'",
                          "A frozen zero scale would switch every residual path off for "
                          "good; use BN, SyncBN or GN to train from scratch.")
    _check_gn_widths(template, stem_out, res2_out, norm)


def _deform_args(r, form, template):
    """detectron2's MODEL.RESNETS.DEFORM_* keys, checked, as make_resnext_stage's keyword
    arguments; {} when no stage is deformable."""
    key = "MODEL.RESNETS.DEFORM_ON_PER_STAGE"
    on = list(r.DEFORM_ON_PER_STAGE)
    if len(on) != 4 or not all(isinstance(v, bool) for v in on):
        raise ConfigError(key, on, "4 booleans, for res2..res5 (e.g. [False, True, True, True])")
    if not any(on):
        return {}
    if form != "c":
        raise ConfigError("MODEL.RESNEXT.BLOCK_FORM", form, f"'c' when {key}={on}",
                          "The deformable 3x3 is one grouped convolution (detectron2's "
                          "DeformBottleneckBlock); forms (a)/(b) split it into C paths.")
    modulated, groups = r.get("DEFORM_MODULATED", False), r.get("DEFORM_NUM_GROUPS", 1)
    check_bool("MODEL.RESNETS.DEFORM_MODULATED", modulated)
    # torchvision's deform_conv2d splits the 3x3's input channels into equal groups.
    k = on.index(True)  # the narrowest deformable stage; wider ones are multiples of it
    width = template.cardinality * template.bottleneck_width * 2**k
    if type(groups) is not int or groups < 1 or width % groups:
        raise ConfigError("MODEL.RESNETS.DEFORM_NUM_GROUPS", groups,
                          f"a divisor of {width} (res{k + 2} bottleneck width C*d*2^{k})",
                          "Each deformable group is an equal share of the 3x3's input "
                          "channels, with offsets of its own.")
    return dict(deform_on_per_stage=on, deform_modulated=modulated, deform_num_groups=groups)


def resnext_block_args(cfg):
    """Keyword arguments of `make_resnext_stage` shared by backbone and ROI head."""
    r, x = cfg.MODEL.RESNETS, resnext_node(cfg)
    template = resolve_template(cfg)
    check_choice("MODEL.RESNEXT.BLOCK_FORM", x.BLOCK_FORM, tuple(BLOCK_FORMS))
    _check_norm(r.NORM, x.BLOCK_FORM, x.ZERO_INIT_RESIDUAL, template, r.STEM_OUT_CHANNELS,
                r.RES2_OUT_CHANNELS)
    return template, dict(res2_out_channels=r.RES2_OUT_CHANNELS, block_form=x.BLOCK_FORM,
                          norm=r.NORM, stride_in_1x1=r.STRIDE_IN_1X1,
                          zero_init_last=x.ZERO_INIT_RESIDUAL,
                          **_deform_args(r, x.BLOCK_FORM, template))


def resnext_backbone_args(cfg):
    """Everything `build_resnext` needs from a config, checked."""
    r = cfg.MODEL.RESNETS
    template, block_args = resnext_block_args(cfg)
    out_features = list(r.OUT_FEATURES)
    if not out_features or any(f not in FEATURES for f in out_features):
        raise ConfigError("MODEL.RESNETS.OUT_FEATURES", out_features,
                          f"a non-empty subset of {list(FEATURES)}")
    check_choice("MODEL.RESNETS.RES5_DILATION", r.RES5_DILATION, (1, 2))
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    if not 0 <= freeze_at <= 5:
        raise ConfigError("MODEL.BACKBONE.FREEZE_AT", freeze_at,
                          "0..5 (0: train all; 1: freeze the stem; k: stem and res2..res{k})")
    return template, dict(out_features=out_features, freeze_at=freeze_at,
                          stem_out_channels=r.STEM_OUT_CHANNELS, res5_dilation=r.RES5_DILATION,
                          **block_args)


def check_features_produced(key, wanted, produced, producer,
                            fix="add them to the producer's OUT_FEATURES"):
    """Raise when `wanted` names a feature the backbone does not output."""
    missing = [f for f in wanted if f not in produced]
    if missing:
        raise ConfigError(key, list(wanted), f"features that {producer} produces: {list(produced)}",
                          f"{missing} not produced; {fix}.")


def check_fpn_dilation(key, dilation, in_features):
    """An FPN on res5 needs res5 at stride 32: detectron2's FPN asserts that each level's
    stride is twice the last one's (a bare "AssertionError: Strides 16 16 are not log2
    contiguous" for a dilated res5, DC5)."""
    if dilation != 1 and "res5" in in_features:
        raise ConfigError(key, dilation, f"1 with an FPN on res5 (its inputs {list(in_features)})",
                          "A dilated res5 stays at stride 16, where FPN needs each level at "
                          "twice the stride of the last; DC5 is a backbone without FPN, "
                          "with res5 its one output feature.")
