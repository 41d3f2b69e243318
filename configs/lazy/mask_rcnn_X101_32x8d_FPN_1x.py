# Mask R-CNN X101_32x8d FPN, 1x schedule: detectron2's mask_rcnn_fpn model with a ResNeXt
# bottom-up (the same parameters as detectron2's
# COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml model: tests/engine/test_lazy.py).
#   python tools/train_net.py --config-file configs/lazy/mask_rcnn_X101_32x8d_FPN_1x.py
from detectron2.model_zoo import get_config

from .common.coco import dataloader
from .common.models import mask_rcnn_fpn as model
from .common.train import train

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x

# catalog: torchvision/resnext101_32x8d.IMAGENET1K_V1 = resnext101_32x8d-8ba56ff5.pth
train.init_checkpoint = "pretrained/resnext101_32x8d.pth"
