"""Our COCO metrics equal pycocotools' COCOeval run directly on the same detections."""
import json

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnext_det.evaluation import METRICS_FILE, COCOMetricsEvaluator

CLASSES = ["cat", "dog", "bird"]


def _write_gt(path, rng, num_images=6):
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 300})
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(0, 200), rng.uniform(0, 120)
            w, h = rng.uniform(8, 100), rng.uniform(8, 80)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 4)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return anns


def _predictions(anns, rng, num_images=6):
    """Jittered ground truth plus false positives, as detectron2 model outputs."""
    outputs = []
    for i in range(1, num_images + 1):
        boxes, scores, classes = [], [], []
        for a in (a for a in anns if a["image_id"] == i):
            x, y, w, h = np.array(a["bbox"]) + rng.normal(0, 4, 4)
            boxes.append([x, y, x + abs(w), y + abs(h)])
            scores.append(rng.uniform(0.3, 1.0))
            classes.append(a["category_id"] - 1 if rng.uniform() > 0.2 else int(rng.integers(0, 3)))
        for _ in range(3):
            x, y = rng.uniform(0, 250, 2)
            boxes.append([x, y, x + 30, y + 30])
            scores.append(rng.uniform(0, 0.6))
            classes.append(int(rng.integers(0, 3)))
        inst = Instances((200, 300), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                         scores=torch.tensor(scores, dtype=torch.float32),
                         pred_classes=torch.tensor(classes))
        outputs.append(({"image_id": i}, {"instances": inst}))
    return outputs


def test_metrics_match_pycocotools(tmp_path):
    rng = np.random.default_rng(0)
    gt = tmp_path / "gt.json"
    anns = _write_gt(gt, rng)
    name = "resnext_det_test_coco_eval"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(gt), str(tmp_path))
    DatasetCatalog.get(name)  # loads the json, sets thing_classes and the id mapping

    evaluator = COCOMetricsEvaluator(name, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for inputs, outputs in _predictions(anns, rng):
        evaluator.process([inputs], [outputs])
    ours = evaluator.evaluate()["bbox"]

    coco_gt = COCO(str(gt))
    coco_dt = coco_gt.loadRes(str(tmp_path / "eval" / "coco_instances_results.json"))
    direct = COCOeval(coco_gt, coco_dt, "bbox")
    direct.evaluate(), direct.accumulate(), direct.summarize()
    for idx, key in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        expected = direct.stats[idx] * 100
        assert np.isnan(ours[key]) if expected < 0 else abs(ours[key] - expected) < 1e-9, key
    assert 0 < ours["AP"] < 100
    written = json.loads((tmp_path / "eval" / METRICS_FILE).read_text())
    assert written["dataset"] == name
    assert written["bbox"]["AP50"] == ours["AP50"]
    assert {f"AP-{c}" for c in CLASSES} <= set(written["bbox"])
