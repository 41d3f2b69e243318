"""Keypoint AP (detectron2's path: pycocotools' COCOeval) equals pycocotools run directly.

The detections are written here: each person's keypoints moved by up to 4 px, plus false
people; the model outputs carry them +0.5 px, as detectron2's instances_to_coco_json takes
0.5 off (COCO keypoints are pixel indices).
"""
import contextlib
import copy
import io
import math

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnext_det.evaluation import COCOMetricsEvaluator

from tests.helpers import register_coco_json

from .test_coco import unofficial_cocoeval

NUM_KEYPOINTS = 17  # COCO's person: pycocotools' default sigmas are for these
SIZE = (160, 200)  # height, width
STATS = ["AP", "AP50", "AP75", "APm", "APl"]


def _people(rng, num_images=12):
    """COCO person annotations (17 keypoints each, some not labeled) and detections."""
    anns, results = [], []
    for image_id in range(1, num_images + 1):
        for _ in range(int(rng.integers(1, 4))):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            x, y = int(rng.integers(0, SIZE[1] - w)), int(rng.integers(0, SIZE[0] - h))
            v = rng.choice([0, 1, 2], NUM_KEYPOINTS, p=[0.2, 0.3, 0.5])
            xy = np.stack([rng.integers(x, x + w, NUM_KEYPOINTS),
                           rng.integers(y, y + h, NUM_KEYPOINTS)], 1) * (v > 0)[:, None]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "bbox": [x, y, w, h], "area": 0.6 * w * h, "iscrowd": 0,
                         "keypoints": np.column_stack([xy, v]).flatten().tolist(),
                         "num_keypoints": int((v > 0).sum())})
            found = np.where((v > 0)[:, None], xy, [x + w // 2, y + h // 2])
            found = found + rng.integers(-4, 5, (NUM_KEYPOINTS, 2))
            results.append(_detection(image_id, [x, y, w, h], found, rng))
        box = [float(v) for v in rng.integers(0, 100, 2)] + [40.0, 40.0]
        results.append(_detection(image_id, box, rng.integers(0, 140, (NUM_KEYPOINTS, 2)), rng))
    return anns, results


def _detection(image_id, box, xy, rng):
    keypoints = np.column_stack([xy, np.ones(NUM_KEYPOINTS)]).astype(float).flatten()
    return {"image_id": image_id, "category_id": 1, "bbox": [float(v) for v in box],
            "score": float(np.float32(rng.random())), "keypoints": keypoints.tolist()}


def keypoint_set(tmp_path, name="resnext_det_test_keypoints"):
    """(dataset name, its json, COCO results): a registered person keypoint set."""
    anns, results = _people(np.random.default_rng(0))
    images = [{"id": i, "file_name": f"{i}.jpg", "height": SIZE[0], "width": SIZE[1]}
              for i in sorted({a["image_id"] for a in anns})]
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(NUM_KEYPOINTS)],
             "skeleton": []}]
    path = tmp_path / "keypoints.json"
    register_coco_json(name, path, {"images": images, "annotations": anns, "categories": cats},
                       tmp_path)
    DatasetCatalog.get(name)  # loaded, as the test loader loads it
    return name, path, results


def model_outputs(results):
    """The detections as a keypoint R-CNN returns them (new tensors at each call: detectron2's
    evaluator moves the keypoints of CPU outputs in place)."""
    pairs = []
    for image_id in sorted({r["image_id"] for r in results}):
        dets = [r for r in results if r["image_id"] == image_id]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]
        keypoints = torch.tensor([d["keypoints"] for d in dets]).view(len(dets), -1, 3)
        keypoints[:, :, :2] += 0.5
        inst = Instances(SIZE, pred_boxes=Boxes(torch.tensor(boxes)),
                         scores=torch.tensor([d["score"] for d in dets]),
                         pred_classes=torch.zeros(len(dets), dtype=torch.int64),
                         pred_keypoints=keypoints)
        pairs.append(({"image_id": image_id}, {"instances": inst}))
    return pairs


def evaluated(evaluator, results):
    evaluator.reset()
    for inputs, outputs in model_outputs(results):
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()


def pycocotools_keypoints(gt_path, results, sigmas=None):
    """pycocotools' keypoint AP (percent, NaN where undefined), its default or `sigmas`."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        direct = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "keypoints")
        if sigmas is not None:
            direct.params.kpt_oks_sigmas = np.array(sigmas)
        direct.evaluate(), direct.accumulate(), direct.summarize()
    return {k: s * 100 if s >= 0 else math.nan for k, s in zip(STATS, direct.stats)}


def test_keypoints_run_pycocotools_even_where_detectron2_has_its_own(tmp_path, monkeypatch):
    """Keypoints take detectron2's path on faster-coco-eval too; detectron2 built with _C
    ran its C++ COCOeval_opt there, not pycocotools' (simulated: test_coco.py)."""
    used = unofficial_cocoeval(monkeypatch)
    name, gt_path, results = keypoint_set(tmp_path)
    expected = pycocotools_keypoints(gt_path, results)
    assert 10 < expected["AP"] < 90
    evaluator = COCOMetricsEvaluator(name, output_dir=str(tmp_path / "eval"))
    ours = evaluated(evaluator, results)["keypoints"]
    assert used == []
    assert set(ours) == set(STATS)
    assert all(abs(ours[k] - v) < 1e-9 for k, v in expected.items() if not math.isnan(v))


def test_the_model_outputs_are_left_as_they_were(tmp_path):
    """detectron2's instances_to_coco_json moves pred_keypoints by -0.5 px in place: with
    two evaluators on the same CPU outputs (detectron2's DatasetEvaluators), the second
    scored keypoints moved twice. Both must score pycocotools' AP, and the outputs keep
    their keypoints."""
    from detectron2.evaluation import DatasetEvaluators

    name, gt_path, results = keypoint_set(tmp_path)
    expected = pycocotools_keypoints(gt_path, results)
    pairs = model_outputs(results)
    before = [outputs["instances"].pred_keypoints.clone() for _, outputs in pairs]
    evaluators = [COCOMetricsEvaluator(name, output_dir=str(tmp_path / f"eval{i}"))
                  for i in range(2)]
    both = DatasetEvaluators(evaluators)
    both.reset()
    for inputs, outputs in pairs:
        both.process([inputs], [outputs])
    assert all(torch.equal(outputs["instances"].pred_keypoints, kept)
               for (_, outputs), kept in zip(pairs, before))
    for evaluator in evaluators:
        ours = evaluator.evaluate()["keypoints"]
        assert all(abs(ours[k] - v) < 1e-9 for k, v in expected.items() if not math.isnan(v))
