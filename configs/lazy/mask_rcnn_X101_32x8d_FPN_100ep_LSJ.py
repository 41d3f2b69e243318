# Mask R-CNN X101_32x8d FPN from scratch with large-scale jitter, 100 epochs: detectron2's
# new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py recipe (loaded from the installed model
# zoo) with a ResNeXt bottom-up. The recipe, as detectron2 ships it: SyncBN in the
# backbone and FPN, batch-statistics norms in the 4conv1fc box head and the mask head,
# 2 convs in the RPN head; images rescaled by 0.1-2.0x and cropped / padded to 1024x1024;
# 64 images per iteration, 184375 iterations (100 epochs of COCO's 118k images), lr 0.1
# with 500 warm-up iterations, /10 at 88.9% and 96.3%; weight decay 4e-5; AMP.
#   python tools/train_net.py --num-gpus 8 \
#       --config-file configs/lazy/mask_rcnn_X101_32x8d_FPN_100ep_LSJ.py
from detectron2.model_zoo import get_config

from .common.coco import dataloader
from .common.models import mask_rcnn_fpn as _resnext_fpn
from .common.train import train

_lsj = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
model, optimizer, lr_multiplier = _lsj.model, _lsj.optimizer, _lsj.lr_multiplier
model.backbone.bottom_up = _resnext_fpn.backbone.bottom_up  # L(ResNeXt)(template="X101_32x8d", ...)
model.backbone.bottom_up.freeze_at = 0  # from scratch: everything trains
model.backbone.bottom_up.norm = "SyncBN"
for _key in ("pixel_mean", "pixel_std", "input_format"):  # RGB, torchvision's statistics
    model[_key] = _resnext_fpn[_key]
# detectron2 writes these as `lambda c: NaiveSyncBatchNorm(c, stats_mode="N")`; the name
# builds the same layer and lets config.yaml be saved as YAML.
model.roi_heads.box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "naiveSyncBN_N"

dataloader.train = _lsj.dataloader.train  # the LSJ augmentations, recompute_boxes, batch 64
dataloader.train.mapper.image_format = "RGB"
# from scratch, 100 epochs, AMP, fp16 gradient all-reduce
for _key in ("init_checkpoint", "max_iter", "amp", "ddp"):
    train[_key] = _lsj.train[_key]
