# detectron2's COCO 2017 data (its configs/common/data/coco.py, loaded from the installed
# model zoo): RGB images, as torchvision's weights expect, and COCO AP by resnext_det's
# evaluator, which also writes <train.output_dir>/inference/<dataset>/coco_metrics.json.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from resnext_det.evaluation import COCOMetricsEvaluator

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.image_format = "RGB"  # the test mapper follows it
dataloader.evaluator = L(COCOMetricsEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference/${..test.dataset.names}",
    backend="faster-coco-eval",  # or "pycocotools" (TEST.COCO_EVAL_BACKEND)
)
# Training data checks (DATALOADER.ON_BAD_BOX / ON_BAD_IMAGE of the YAML configs):
# on_bad_box "skip" -> leave out boxes with no positive width / height, logged with counts;
# "error" -> stop, naming them. on_bad_image "error" -> stop at an image that cannot be
# decoded, naming it; "skip" -> log it and train on another image.
dataloader.on_bad_box = "skip"
dataloader.on_bad_image = "error"
