"""The ImageNet classifier: stem, res2..res5, global average pool, fc.

Built from the same stage code as the detection backbones, so its weights are the
backbone's weights under the same names (stem.*, res2.*, ..., res5.*) plus `linear.*`,
the classifier layer of detectron2's ResNet.
"""
from detectron2.modeling.backbone.resnet import ResNet

from .resnext import build_resnext
from .templates import parse_template


class ResNeXtClassifier(ResNet):
    """detectron2's ResNet with its `linear` head; forward returns the logits (N, classes)."""

    def forward(self, x):
        return super().forward(x)["linear"]


def resnext_classifier(template, *, num_classes=1000, block_form="c", norm="BN",
                       stride_in_1x1=False, zero_init_residual=False):
    """A classifier for a Template or a template name ("X50_32x4d").

    The defaults are the paper's ImageNet setting: BN, stride in the 3x3 (fb.resnet.torch).
    """
    if isinstance(template, str):
        template = parse_template(template)
    return build_resnext(template, num_classes=num_classes, block_form=block_form, norm=norm,
                         stride_in_1x1=stride_in_1x1, zero_init_last=zero_init_residual,
                         net_class=ResNeXtClassifier)
