# detectron2's FPN R-CNN (its configs/common/models/mask_rcnn_fpn.py, loaded from the
# installed model zoo, not copied) with a ResNeXt-101 32x8d bottom-up and the input
# convention of torchvision's ImageNet weights, as configs/Base-ResNeXt.yaml.
import copy

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from resnext_det.modeling.lazy import ResNeXt

mask_rcnn_fpn = get_config("common/models/mask_rcnn_fpn.py").model
mask_rcnn_fpn.backbone.bottom_up = L(ResNeXt)(
    template="X101_32x8d",
    out_features=["res2", "res3", "res4", "res5"],  # the FPN's in_features follow them
    freeze_at=2,  # stem and res2 keep their ImageNet weights
    norm="FrozenBN",
    # The paper's models (fb.resnet.torch) and torchvision put the stride in the 3x3;
    # detectron2's ResNet configs use MSRA's 1x1. Weights must agree (their metadata says).
    stride_in_1x1=False,
)
# detectron2 normalizes 0-255 pixels: torchvision's mean/std (0.485, 0.456, 0.406) /
# (0.229, 0.224, 0.225) on 0-1 RGB pixels, times 255. The data's image_format is "RGB".
mask_rcnn_fpn.pixel_mean = [123.675, 116.280, 103.530]
mask_rcnn_fpn.pixel_std = [58.395, 57.120, 57.375]
mask_rcnn_fpn.input_format = "RGB"

# Faster R-CNN: the same without the mask branch (StandardROIHeads: no mask_in_features).
faster_rcnn_fpn = copy.deepcopy(mask_rcnn_fpn)
for _key in ("mask_in_features", "mask_pooler", "mask_head"):
    faster_rcnn_fpn.roi_heads.pop(_key)
