"""The peers of bench.py, built for real, with the same weights as ours."""
import json
import os
import tempfile

import numpy as np
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import resnext_det
from resnext_det.checkpoint import convert_weights
from resnext_det.evaluation import COCOMetricsEvaluator
from resnext_det.utils.testing import detection_error, randomize_norms_


def classifier_pair(device):
    """(ours, torchvision's) ResNeXt-50 32x4d in eval mode, with torchvision's weights."""
    theirs = randomize_norms_(torchvision.models.resnext50_32x4d()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "resnext50_32x4d.pth")
        torch.save(theirs.state_dict(), path)
        converted = convert_weights(path, keep_fc=True)
    ours = resnext_det.resnext_classifier("X50_32x4d")
    incompatible = ours.load_state_dict(converted.state_dict, strict=False)
    assert not incompatible.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in incompatible.missing_keys)
    return ours.eval().to(device), theirs.to(device)


def _zoo_cfg(kind, device):
    name = {"C4": "faster_rcnn_R_50_C4_1x.yaml", "FPN": "faster_rcnn_R_50_FPN_1x.yaml"}[kind]
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(f"COCO-Detection/{name}"))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.WEIGHTS", "",
                         "MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 4,
                         "MODEL.RESNETS.STRIDE_IN_1X1", False])
    return cfg


def build_detectors(kind, device):
    """(ours, detectron2's built-in) Faster R-CNN X50-32x4d, same weights, eval mode."""
    theirs_cfg = _zoo_cfg(kind, device)
    ours_cfg = theirs_cfg.clone()
    ours_cfg.MODEL.BACKBONE.NAME = {"C4": "build_resnext_backbone",
                                    "FPN": "build_resnext_fpn_backbone"}[kind]
    if kind == "C4":
        ours_cfg.MODEL.ROI_HEADS.NAME = "ResNeXtRes5ROIHeads"
    theirs = randomize_norms_(build_model(theirs_cfg)).eval()
    ours = build_model(ours_cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def detector_inputs(device, batch=1, with_targets=False, size=(800, 1333)):
    """Images of `size` (detectron2's test size by default) with a few boxes when training."""
    gen = torch.Generator().manual_seed(0)
    height, width = size
    inputs = []
    for _ in range(batch):
        record = {"image": (torch.rand(3, height, width, generator=gen) * 255).to(device),
                  "height": height, "width": width}
        if with_targets:
            inst = Instances((height, width))
            boxes = torch.tensor([[100., 100., 400., 300.], [500., 200., 900., 700.]])
            inst.gt_boxes = Boxes(boxes * torch.tensor([width / 1333, height / 800] * 2))
            inst.gt_classes = torch.tensor([3, 17])
            record["instances"] = inst.to(device)
        inputs.append(record)
    return inputs


def outputs_agree(ours, theirs):
    """Max relative error of scores and boxes, detections matched as sets (random weights
    score many boxes alike: rounding may swap two in rank); raises when they differ."""
    a, b = ours[0]["instances"], theirs[0]["instances"]
    if len(a) != len(b):
        raise AssertionError(f"{len(a)} detections vs {len(b)}")
    err = detection_error(a, b)
    assert err < 1e-4, f"detections differ: {err:.2e}"
    return err


def coco_eval_pair(num_images=500, per_image=8, seed=0):
    """(ours, pycocotools) callables evaluating the same detections; and their count."""
    rng = np.random.default_rng(seed)
    tmp = tempfile.mkdtemp()
    images, anns, preds = [], [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 480, "width": 640})
        boxes = rng.uniform(0, 300, (per_image, 2))
        sizes = rng.uniform(10, 200, (per_image, 2))
        cats = rng.integers(1, 11, per_image)
        for box, size, cat in zip(boxes, sizes, cats):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(cat),
                         "bbox": [*box, *size], "area": float(size.prod()), "iscrowd": 0})
        jitter = rng.normal(0, 6, (per_image, 4))
        xyxy = np.concatenate([boxes, boxes + sizes], 1) + jitter
        scores = rng.uniform(0, 1, per_image)
        preds.append(({"image_id": i}, {"instances": Instances(
            (480, 640), pred_boxes=Boxes(torch.tensor(xyxy, dtype=torch.float32)),
            scores=torch.tensor(scores, dtype=torch.float32),
            pred_classes=torch.tensor(cats - 1))}))
    gt = os.path.join(tmp, "gt.json")
    with open(gt, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": k, "name": str(k)} for k in range(1, 11)]}, f)
    name = "bench_coco_eval"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, gt, tmp)
    DatasetCatalog.get(name)

    def ours():
        evaluator = COCOMetricsEvaluator(name, output_dir=os.path.join(tmp, "eval"))
        evaluator.reset()
        for inputs, outputs in preds:
            evaluator.process([inputs], [outputs])
        return evaluator.evaluate()

    def theirs():
        coco_gt = COCO(gt)
        results = [{"image_id": inp["image_id"], "category_id": int(c) + 1,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(s)}
                   for inp, out in preds
                   for (x0, y0, x1, y1), s, c in zip(out["instances"].pred_boxes.tensor.tolist(),
                                                     out["instances"].scores.tolist(),
                                                     out["instances"].pred_classes.tolist())]
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
        return ev.stats

    ap_ours, ap_theirs = ours()["bbox"]["AP"], theirs()[0] * 100
    # faster-coco-eval (our default backend) equals pycocotools within 1e-4 of the stats
    # (tests/evaluation/test_eval_backends.py): 0.01 in AP points
    assert abs(ap_ours - ap_theirs) < 1e-2, (ap_ours, ap_theirs)
    return ours, theirs, num_images * per_image
