"""Every detector family trains on the digits set and is scored by COCO box (and mask) AP.

A few iterations learn nothing, so the families' APs are scored, not judged: each run must
produce its family's losses, finite metrics written to coco_metrics.json, and detections
(with masks for Mask R-CNN) whose AP pycocotools, run here on the written detections,
computes to the same numbers. What AP means is pinned separately: the ground truth fed to
the evaluator as predictions scores 100 box and mask AP with both backends, and masks
shifted by 2 px lower mask AP only, to what pycocotools computes for them directly.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from pycocotools import mask as mask_util

import resnext_det
from resnext_det.data import register_digits
from resnext_det.engine import Trainer
from resnext_det.evaluation import METRICS_FILE, COCOMetricsEvaluator
from resnext_det.evaluation.coco import BACKENDS, RESULTS_FILE
from tests.helpers import STATS, pycocotools_stats

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# family -> (shipped config, loss names only that family's heads produce)
FAMILIES = {
    "faster_c4": ("faster_rcnn_X50_32x4d.yaml", {"loss_rpn_cls", "loss_cls", "loss_box_reg"}),
    "faster_fpn": ("faster_rcnn_X50_32x4d_FPN_1x.yaml", {"loss_rpn_cls", "loss_cls"}),
    "retinanet": ("retinanet_X101_32x4d_FPN_1x.yaml", {"loss_cls", "loss_box_reg"}),
    "mask_fpn": ("mask_rcnn_X50_32x4d_FPN_1x.yaml", {"loss_cls", "loss_mask"}),
    "mask_c4": ("mask_rcnn_X50_32x4d_C4_1x.yaml", {"loss_cls", "loss_mask"}),
    "cascade": ("cascade_rcnn_X101_32x4d_FPN_1x.yaml", {"loss_cls_stage2", "loss_box_reg_stage2"}),
    "cascade_mask": ("cascade_mask_rcnn_X101_32x4d_FPN_1x.yaml", {"loss_cls_stage2", "loss_mask"}),
}
# The shipped configs made tiny: a ResNeXt-50 of C=2, d=2 and 1/16 widths, from scratch, on
# 64 px digits images, 2 iterations, small proposal and sample counts; every detection
# kept (score threshold 0) so that an untrained model still has something to score.
TINY = [
    "MODEL.WEIGHTS", "", "MODEL.RESNEXT.TEMPLATE", "X50_2x2d",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_HEADS.NUM_CLASSES", 10,
    "MODEL.RETINANET.NUM_CLASSES", 10, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST", 100, "TEST.DETECTIONS_PER_IMAGE", 20,
    "DATASETS.TRAIN", "('digits_train',)", "DATASETS.TEST", "('digits_val',)",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 64, "INPUT.RANDOM_FLIP", "none", "INPUT.MASK_FORMAT", "bitmask",
    "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.01,
    "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", 2,
    "SOLVER.CHECKPOINT_PERIOD", 100, "TEST.EVAL_PERIOD", 0, "SEED", 0,
]


def family_cfg(config_name, output_dir, backend="pycocotools"):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / config_name))
    cfg.merge_from_list([*map(str, TINY), "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(output_dir),
                         "TEST.COCO_EVAL_BACKEND", backend])
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def digits(datasets_root):
    register_digits(datasets_root / "digits")
    return DatasetCatalog.get("digits_val")


# the evaluator's backend alternates, so that both score real models' boxes and masks
@pytest.mark.parametrize("family,backend", [(f, BACKENDS[i % 2]) for i, f in enumerate(FAMILIES)])
def test_family_trains_and_is_scored(family, backend, digits, tmp_path):
    config_name, own_losses = FAMILIES[family]
    cfg = family_cfg(config_name, tmp_path, backend)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = {k: v for r in records for k, v in r.items() if k.startswith("loss")}
    assert own_losses <= set(losses) and all(math.isfinite(v) for v in losses.values()), losses
    assert ("loss_mask" in losses) == cfg.MODEL.MASK_ON

    folder = tmp_path / "inference" / "digits_val"
    metrics = json.loads((folder / METRICS_FILE).read_text())
    tasks = {"bbox", "segm"} if cfg.MODEL.MASK_ON else {"bbox"}
    assert set(metrics) - {"dataset"} == tasks
    results = json.loads((folder / RESULTS_FILE).read_text())
    assert len(results) > 0 and {r["image_id"] for r in results} <= {d["image_id"] for d in digits}
    for task in tasks:
        expected = pycocotools_stats(MetadataCatalog.get("digits_val").json_file, results, task)
        assert {k: metrics[task][k] for k in STATS} == pytest.approx(expected, abs=1e-4,
                                                                      nan_ok=True)
    if cfg.MODEL.MASK_ON:
        assert all(r["segmentation"]["size"] == [64, 64] for r in results)


def ground_truth_outputs(record, shift=0):
    """The record's annotations as a model's output (score 1), masks decoded from the
    json's RLE by pycocotools and rolled `shift` px to the right."""
    anns = record["annotations"]
    height, width = record["height"], record["width"]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    masks = np.stack([mask_util.decode(a["segmentation"]) for a in anns]).astype(bool)
    return {"instances": Instances(
        (height, width), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
        scores=torch.ones(len(anns)),
        pred_classes=torch.tensor([a["category_id"] for a in anns]),
        pred_masks=torch.from_numpy(np.roll(masks, shift, axis=2)))}


def evaluate_ground_truth(digits, backend, output_dir, shift=0):
    evaluator = COCOMetricsEvaluator("digits_val", output_dir=str(output_dir), backend=backend)
    evaluator.reset()
    for record in digits:
        inputs = [{"image_id": record["image_id"], "height": record["height"],
                   "width": record["width"]}]
        evaluator.process(inputs, [ground_truth_outputs(record, shift)])
    return evaluator.evaluate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ground_truth_scores_100_box_and_mask_ap(digits, backend, tmp_path):
    results = evaluate_ground_truth(digits, backend, tmp_path)
    written = json.loads((tmp_path / METRICS_FILE).read_text())
    for task in ("bbox", "segm"):
        assert written[task] == pytest.approx(results[task], nan_ok=True)
        assert {k: results[task][k] for k in ("AP", "AP50", "AP75")} == pytest.approx(
            {"AP": 100, "AP50": 100, "AP75": 100}), task


@pytest.mark.parametrize("backend", BACKENDS)
def test_shifted_masks_lower_mask_ap_only(digits, backend, tmp_path):
    """Masks 2 px off their digits (thin strokes: mask IoU far below the box's) lower
    mask AP alone; the evaluator's segm numbers are pycocotools' on the same detections."""
    results = evaluate_ground_truth(digits, backend, tmp_path, shift=2)
    assert results["bbox"]["AP"] == pytest.approx(100)
    assert results["segm"]["AP"] < 90
    written = json.loads((tmp_path / RESULTS_FILE).read_text())
    expected = pycocotools_stats(MetadataCatalog.get("digits_val").json_file, written, "segm")
    assert {k: results["segm"][k] for k in STATS} == pytest.approx(expected, abs=1e-4,
                                                                    nan_ok=True)
