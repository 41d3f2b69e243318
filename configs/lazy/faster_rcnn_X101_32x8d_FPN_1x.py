# Faster R-CNN X101_32x8d FPN, 1x schedule (90k iterations at 16 images, ~12 COCO epochs):
# the Python-config twin of configs/faster_rcnn_X101_32x8d_FPN_1x.yaml (same model, same
# parameter names: tests/engine/test_lazy.py).
#   python tools/train_net.py --config-file configs/lazy/faster_rcnn_X101_32x8d_FPN_1x.py
from detectron2.model_zoo import get_config

from .common.coco import dataloader
from .common.models import faster_rcnn_fpn as model
from .common.train import train

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x

dataloader.train.mapper.use_instance_mask = False
# catalog: torchvision/resnext101_32x8d.IMAGENET1K_V1 = resnext101_32x8d-8ba56ff5.pth
# (tools/convert_weights.py --list); the file as torchvision saves it, converted on load.
train.init_checkpoint = "pretrained/resnext101_32x8d.pth"
