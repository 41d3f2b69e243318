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
    """An ImageNet-style classifier: stem, res2..res5, global average pool, `linear`.

    The defaults are the paper's ImageNet setting: BN, stride in the 3x3 (fb.resnet.torch);
    with them, "X50_32x4d" has exactly torchvision's resnext50_32x4d parameter count.

    Args:
        template (Template or str): e.g. "R50", "X50_32x4d", "X101_64x4d".
        num_classes (int): outputs of `linear`.
        block_form (str): the paper's Figure 3 form, "a", "b" or "c" (BLOCK_FORMS).
        norm (str): a detectron2 norm name: "BN", "FrozenBN", "SyncBN", "GN".
        stride_in_1x1 (bool): put the stride in the first 1x1 (MSRA / Caffe2) instead
            of the 3x3.
        zero_init_residual (bool): start the last norm of every block at scale 0.

    Returns:
        ResNeXtClassifier: forward maps (N, 3, H, W) images to (N, num_classes) logits;
        its weights are named as the backbone's (stem.*, res2.* .. res5.*) plus linear.*.
    """
    if isinstance(template, str):
        template = parse_template(template)
    return build_resnext(template, num_classes=num_classes, block_form=block_form, norm=norm,
                         stride_in_1x1=stride_in_1x1, zero_init_last=zero_init_residual,
                         net_class=ResNeXtClassifier)
