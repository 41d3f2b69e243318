# The demo (configs/demo/faster_rcnn_X50_digits.yaml) as a Python config: a narrow
# ResNeXt-50 (C=8, d=4, widths / 4) Faster R-CNN FPN trained from scratch on the digits
# demo set (tools/build_digits_dataset.py) on 2 CPU cores. Widths follow
# model.backbone.out_channels and box_head.fc_dims by interpolation, so one override each
# changes the whole network; the schedule is fractions of train.max_iter.
#   python tools/train_net.py --config-file configs/lazy/faster_rcnn_X50_digits.py \
#       train.max_iter=300 train.output_dir=output/lazy_digits_300
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from .common.coco import dataloader
from .common.models import faster_rcnn_fpn as model
from .common.train import train

_bottom_up = model.backbone.bottom_up
_bottom_up.template = "X50_8x4d"
_bottom_up.zero_init_residual = True  # each block starts as the identity: stable from scratch
_bottom_up.norm = "BN"  # trainable norms from scratch (8 images per batch)
_bottom_up.freeze_at = 0
_bottom_up.stem_out_channels = 32
_bottom_up.res2_out_channels = 64  # res2..res5: 64, 128, 256, 512 channels (ResNeXt-50's / 4)

model.backbone.out_channels = 64
model.proposal_generator.head.in_channels = "${...backbone.out_channels}"
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]  # digits: 12-48 px
model.proposal_generator.pre_nms_topk = (400, 500)  # (train, test), per level
model.proposal_generator.post_nms_topk = (256, 300)
model.roi_heads.num_classes = 10
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape = L(ShapeSpec)(
    channels="${....backbone.out_channels}", height=7, width=7)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape = L(ShapeSpec)(channels="${...box_head.fc_dims[1]}")

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="digits_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        # 128 px images, kept at 128; no flip: a mirrored 2 is not a 2
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=128, max_size=128)],
        image_format="RGB",
    ),
    total_batch_size=8,
    num_workers=1,
    # all images are 128x128: grouping by aspect ratio makes the same batches; without it the
    # worker loads whole batches ahead (the YAML demo's DATALOADER.ASPECT_RATIO_GROUPING False)
    aspect_ratio_grouping=False,
)
dataloader.test.dataset.names = "digits_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=128, max_size=128)]
dataloader.test.num_workers = 1
dataloader.test.batch_size = 8  # all 128x128: the same AP as 1 image per batch, 1.4x faster

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02
lr_multiplier = L(WarmupParamScheduler)(
    # scale-invariant: /10 at 73% and 90% of train.max_iter, whatever it is
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[1100, 1350, 1500]),
    warmup_length=100 / 1500,
    warmup_factor=0.001,
)

train.roi_align = "sparse"  # as the YAML demo: torchvision's values, ~4x faster here
train.init_checkpoint = ""  # from scratch; tools/pretrain_cls.py output can start it instead
train.max_iter = 1500
train.checkpointer.period = 500
train.eval_period = 500
train.output_dir = "output/lazy_digits"
train.seed = 0
