"""ResNeXt networks assembled from a Template, on detectron2's ResNet and BasicStem.

detectron2's `ResNet` already does what a backbone needs around the stages (out
features, strides, freezing, the optional classifier head); we give it our stages.
"""
from detectron2.modeling.backbone.resnet import BasicStem, ResNet

from .blocks import BLOCK_FORMS
from .deform import DeformGroupedBottleneck
from .templates import parse_template

STAGE_NAMES = ("res2", "res3", "res4", "res5")


def make_resnext_stage(template, stage, *, in_channels, res2_out_channels=256, block_form="c",
                       first_stride=None, dilation=1, norm="BN", stride_in_1x1=False,
                       zero_init_last=False, deform_on_per_stage=(False,) * 4,
                       deform_modulated=False, deform_num_groups=1):
    """The blocks of one stage ("res2".."res5") of a template.

    Width doubles at each stage (the paper's second template rule): res{k} has paths of
    width d * 2**(k-2) and output 256 * 2**(k-2) channels. The first block of res3..res5
    halves the resolution unless `first_stride` says otherwise (a dilated res5 uses 1).
    When `deform_on_per_stage` (res2..res5) marks the stage, every block's 3x3 is
    deformable (DeformGroupedBottleneck; form "c" only), as in detectron2.
    """
    k = STAGE_NAMES.index(stage)
    num_blocks = template.stage_blocks[k]
    if first_stride is None:
        first_stride = 1 if k == 0 else 2
    block_class, deform_kwargs = BLOCK_FORMS[block_form], {}
    if deform_on_per_stage[k]:
        if block_form != "c":
            raise ValueError(f"a deformable {stage} needs block_form 'c', got {block_form!r}")
        block_class = DeformGroupedBottleneck
        deform_kwargs = dict(deform_modulated=deform_modulated,
                             deform_num_groups=deform_num_groups)
    return ResNet.make_stage(
        block_class,
        num_blocks,
        in_channels=in_channels,
        out_channels=res2_out_channels * 2**k,
        stride_per_block=[first_stride] + [1] * (num_blocks - 1),
        cardinality=template.cardinality,
        bottleneck_width=template.bottleneck_width * 2**k,
        norm=norm,
        stride_in_1x1=stride_in_1x1,
        dilation=dilation,
        zero_init_last=zero_init_last,
        **deform_kwargs,
    )


def make_resnext_stages(template, *, num_stages=4, stem_out_channels=64, res2_out_channels=256,
                        res5_dilation=1, **block_kwargs):
    """Stages res2.. of a template, as `ResNet(stem, stages)` takes them.

    `res5_dilation=2` keeps res5 at stride 16 with dilated 3x3s (the R-FCN / DC5 setting).
    """
    stages, in_channels = [], stem_out_channels
    for k, stage in enumerate(STAGE_NAMES[:num_stages]):
        dilated = stage == "res5" and res5_dilation > 1
        stages.append(make_resnext_stage(
            template, stage, in_channels=in_channels, res2_out_channels=res2_out_channels,
            first_stride=1 if dilated else None, dilation=res5_dilation if dilated else 1,
            **block_kwargs))
        in_channels = res2_out_channels * 2**k
    return stages


def build_resnext(template, *, in_channels=3, out_features=None, freeze_at=0, num_classes=None,
                  stem_out_channels=64, norm="BN", net_class=ResNet, **stage_kwargs):
    """A detectron2 `ResNet` (or `net_class`) with ResNeXt stages, without a config.

    Only the stages that `out_features` needs are built (detectron2's rule), so a C4
    backbone with out_features=["res4"] has no res5.

    Args:
        template (Template or str): depth, cardinality C and bottleneck width d
            ("X101_32x8d" or parse_template("X101_32x8d")).
        in_channels (int): input channels (3 for images).
        out_features (list[str] or None): of "stem", "res2".."res5", "linear"; None: the
            last one built ("linear" with num_classes, else "res5").
        freeze_at (int): 0 trains all; 1 freezes the stem; k freezes stem and res2..res{k}.
        num_classes (int or None): add the global pool and `linear` classifier.
        stem_out_channels (int): channels of the 7x7 stem (64 in the paper).
        norm (str): a detectron2 norm name ("BN", "FrozenBN", "SyncBN", "GN").
        net_class (type): ResNet or a subclass (the classifier's).
        stage_kwargs: make_resnext_stages' and make_resnext_stage's options:
            res2_out_channels, res5_dilation, block_form, stride_in_1x1, zero_init_last,
            deform_on_per_stage, deform_modulated, deform_num_groups.

    Returns:
        `net_class`: the network; `template` holds the Template it was built from.
    """
    if isinstance(template, str):  # as resnext_classifier takes it
        template = parse_template(template)
    stem = BasicStem(in_channels=in_channels, out_channels=stem_out_channels, norm=norm)
    stages = make_resnext_stages(template, stem_out_channels=stem_out_channels, norm=norm,
                                 **stage_kwargs)
    net = net_class(stem, stages, num_classes=num_classes, out_features=out_features,
                    freeze_at=freeze_at)
    net.template = template
    return net
