"""Our COCO metrics equal pycocotools' COCOeval run directly on the same detections.

The detections are written here, from the ground truth with known perturbations, never
read back from the evaluator under test. Boxes have integer corners and scores are
float32 values, so detectron2's float32 Instances carry them exactly.
"""
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import coco_evaluation as d2_coco
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnext_det.evaluation import METRICS_FILE, COCOMetricsEvaluator
from resnext_det.evaluation.coco import BACKENDS, cocoeval_class
from tests.helpers import captured, register_coco_json

# Dataset ids with gaps: the model predicts 0..2 and the evaluator must map them back.
CATEGORIES = {1: "cat", 3: "dog", 7: "bird"}
CONTIGUOUS = {cat_id: k for k, cat_id in enumerate(sorted(CATEGORIES))}  # load_coco_json's rule
STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
SIZE = (240, 320)  # height, width
WIDEN = 0.4  # a box widened by 40% of its width contains the truth: IoU = 1 / 1.4 = 0.714


def _ground_truth(rng, num_images=8):
    """COCO annotations: integer boxes of widths divisible by 5, small to large, apart from
    each other even when widened (so a detection overlaps its own truth box only)."""
    anns = []
    for image_id in range(1, num_images + 1):
        taken = []
        for _ in range(int(rng.integers(2, 6))):
            side = int(rng.choice([15, 25, 50, 80, 150]))  # area < 32^2, < 96^2, above
            w, h = side, side + 5 * int(rng.integers(-2, 3))
            x, y = int(rng.integers(0, SIZE[1] - 1.5 * w)), int(rng.integers(0, SIZE[0] - h))
            if any(x < x1 + 1.5 * w1 and x1 < x + 1.5 * w and y < y1 + h1 and y1 < y + h
                   for x1, y1, w1, h1 in taken):
                continue
            taken.append((x, y, w, h))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                         "category_id": int(rng.choice(list(CATEGORIES))), "area": w * h,
                         "iscrowd": 0})
    return anns


def _register(tmp_path, anns, name="resnext_det_test_coco_eval", load=True):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": SIZE[0], "width": SIZE[1]}
              for i in sorted({a["image_id"] for a in anns})]
    cats = [{"id": k, "name": n} for k, n in CATEGORIES.items()]
    path = tmp_path / "gt.json"
    register_coco_json(name, path, {"images": images, "annotations": anns, "categories": cats},
                       tmp_path)
    if load:
        DatasetCatalog.get(name)  # loads the json: thing_classes and the id mapping
    return name, path


def _score(rng, low, high):
    return float(np.float32(rng.uniform(low, high)))


def _perturbed(anns, rng):
    """COCO results: per truth box, in turn, the box itself, widened (IoU 0.714), shifted by
    a quarter of its width (IoU 0.6-0.67), the right box with a wrong class, or nothing;
    plus two random false positives per image."""
    results = []
    for k, ann in enumerate(anns):
        x, y, w, h = ann["bbox"]
        cat, kind = ann["category_id"], k % 5
        if kind == 4:
            continue
        box = {0: [x, y, w, h], 1: [x, y, w + WIDEN * w, h], 2: [x + w // 4, y, w, h],
               3: [x, y, w, h]}[kind]
        if kind == 3:
            cat = next(c for c in CATEGORIES if c != cat)
        results.append({"image_id": ann["image_id"], "category_id": cat,
                        "bbox": [float(v) for v in box], "score": _score(rng, 0.3, 1.0)})
    for image_id in sorted({a["image_id"] for a in anns}):
        for _ in range(2):
            x, y = int(rng.integers(0, SIZE[1] - 40)), int(rng.integers(0, SIZE[0] - 40))
            results.append({"image_id": image_id, "category_id": int(rng.choice(list(CATEGORIES))),
                            "bbox": [float(x), float(y), 30.0, 30.0], "score": _score(rng, 0, 0.6)})
    return results


def _as_model_outputs(results):
    """The same detections as a detectron2 model returns them: XYXY, contiguous classes."""
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    pairs = []
    for image_id, dets in sorted(by_image.items()):
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]
        inst = Instances(SIZE, pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                         scores=torch.tensor([d["score"] for d in dets], dtype=torch.float32),
                         pred_classes=torch.tensor([CONTIGUOUS[d["category_id"]] for d in dets]))
        pairs.append(({"image_id": image_id}, {"instances": inst}))
    return pairs


def _ours(name, results, output_dir, backend=BACKENDS[0]):
    evaluator = COCOMetricsEvaluator(name, output_dir=str(output_dir), backend=backend)
    evaluator.reset()
    for inputs, outputs in _as_model_outputs(results):
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()["bbox"]


def _pycocotools(gt_path, results):
    """pycocotools run directly: {AP, ..., APl, AP-<class>} in percent, NaN where undefined."""
    coco_gt = COCO(str(gt_path))
    direct = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    direct.evaluate(), direct.accumulate(), direct.summarize()
    metrics = {k: direct.stats[i] * 100 if direct.stats[i] >= 0 else float("nan")
               for i, k in enumerate(STATS)}
    for k, cat_id in enumerate(direct.params.catIds):
        precision = direct.eval["precision"][:, :, k, 0, -1]
        precision = precision[precision > -1]
        ap = precision.mean() * 100 if precision.size else float("nan")
        metrics[f"AP-{CATEGORIES[cat_id]}"] = ap
    return metrics


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics_match_pycocotools(backend, tmp_path):
    rng = np.random.default_rng(0)
    anns = _ground_truth(rng)
    name, gt_path = _register(tmp_path, anns)
    results = _perturbed(anns, rng)
    expected = _pycocotools(gt_path, results)
    assert 20 < expected["AP"] < 80 and expected["AP50"] > expected["AP75"]  # every case counts
    ours = _ours(name, results, tmp_path / "eval", backend)
    tol = 1e-9 if backend == "pycocotools" else 1e-2  # faster-coco-eval: test_eval_backends.py
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert (np.isnan(ours[key]) if np.isnan(value) else abs(ours[key] - value) < tol), key
    written = json.loads((tmp_path / "eval" / METRICS_FILE).read_text())
    assert written["dataset"] == name and written["bbox"] == pytest.approx(ours, nan_ok=True)


def _with_boxes(anns, transform):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
             "bbox": [float(v) for v in transform(a["bbox"])]} for a in anns]


def test_known_detections_score_what_coco_defines(tmp_path):
    """AP = mean over IoU 0.50:0.05:0.95 of the area under precision/recall. The truth
    itself scores 100; boxes at IoU 0.714 pass the 5 thresholds up to 0.70: AP 50, AP50
    100, AP75 0; the right boxes with the wrong class score 0."""
    anns = _ground_truth(np.random.default_rng(1))
    name, _ = _register(tmp_path, anns)
    exact = _ours(name, _with_boxes(anns, lambda b: b), tmp_path / "exact")
    assert all(exact[k] == 100 for k in exact if not np.isnan(exact[k]))
    assert not any(np.isnan(exact[f"AP-{c}"]) for c in CATEGORIES.values())  # all present
    widened = _ours(name, _with_boxes(anns, lambda b: [b[0], b[1], b[2] * (1 + WIDEN), b[3]]),
                    tmp_path / "widened")
    assert (widened["AP"], widened["AP50"], widened["AP75"]) == pytest.approx((50, 100, 0))
    wrong = [dict(r, category_id=next(c for c in CATEGORIES if c != r["category_id"]))
             for r in _with_boxes(anns, lambda b: b)]
    assert _ours(name, wrong, tmp_path / "wrong")["AP"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first_ids", [(0,), (-1, -2)])
def test_annotation_ids_coco_eval_misreads_are_numbered_from_1(backend, first_ids, tmp_path):
    """A dataset the user registered (register_coco_instances: no --dataset check) whose
    annotation ids hold 0 or negative ids (a repeat stops detectron2's load_coco_json).
    COCOeval read a match to object 0 as no match, faster-coco-eval one to a negative id
    too: the AP fell. The evaluator numbers them 1..N (warned), and scores what pycocotools
    scores on the same json with its ids renumbered."""
    rng = np.random.default_rng(0)
    anns = _ground_truth(rng)
    results = _perturbed(anns, rng)
    renumbered_path = _register(tmp_path, anns, name="resnext_det_test_ids_renumbered")[1]
    expected = _pycocotools(renumbered_path, results)
    bad = [dict(a, id=i) for a, i in zip(anns, first_ids)] + anns[len(first_ids):]
    (tmp_path / "bad").mkdir()
    name, bad_path = _register(tmp_path / "bad", bad)
    direct = cocoeval_class(backend)  # the backend's own COCOeval on the json as it is
    coco_gt = COCO(str(bad_path))
    misread = direct(coco_gt, coco_gt.loadRes(results), "bbox")
    misread.evaluate(), misread.accumulate(), misread.summarize()
    if not (backend == "pycocotools" and first_ids == (-1, -2)):  # pycocotools takes negatives
        assert misread.stats[0] * 100 < expected["AP"] - 0.5
    with captured("detectron2.evaluation.coco_evaluation") as log:
        ours = _ours(name, results, tmp_path / "eval", backend)
    tol = 1e-9 if backend == "pycocotools" else 1e-2
    assert abs(ours["AP"] - expected["AP"]) < tol and abs(ours["AP50"] - expected["AP50"]) < tol
    assert any("annotation ids are not unique positive integers" in m for m in log), log


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_set_not_loaded_before_the_evaluation_gets_its_class_ids_mapped(backend, tmp_path):
    """register_coco_instances sets the contiguous -> json id mapping (and thing_classes)
    only when the set is loaded: detections made without detectron2's loader were scored
    with their contiguous ids as json ids (class k as category k: AP near 0)."""
    rng = np.random.default_rng(0)
    anns = _ground_truth(rng)
    name, gt_path = _register(tmp_path, anns, load=False)
    assert MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id", None) is None
    results = _perturbed(anns, rng)
    expected = _pycocotools(gt_path, results)
    ours = _ours(name, results, tmp_path / "eval", backend)
    tol = 1e-9 if backend == "pycocotools" else 1e-2
    assert set(ours) == set(expected)  # per-class APs too
    assert all(abs(ours[k] - v) < tol for k, v in expected.items() if not np.isnan(v))


def test_pycocotools_backend_runs_pycocotools_even_where_detectron2_has_its_own(
        tmp_path, monkeypatch):
    """detectron2 built with its _C has COCOeval_opt, its C++ COCOeval ("unofficial" in its
    words), and runs it by default: TEST.COCO_EVAL_BACKEND "pycocotools" ran that one
    instead of pycocotools'. Such a build is simulated by a COCOeval_opt that records its
    use (keypoints, detectron2's path on either backend: test_keypoints.py)."""
    used = unofficial_cocoeval(monkeypatch)
    rng = np.random.default_rng(0)
    anns = _ground_truth(rng)
    name, gt_path = _register(tmp_path, anns)
    results = _perturbed(anns, rng)
    expected = _pycocotools(gt_path, results)
    ours = _ours(name, results, tmp_path / "eval", "pycocotools")
    assert used == []
    assert all(abs(ours[k] - v) < 1e-9 for k, v in expected.items() if not np.isnan(v))


def unofficial_cocoeval(monkeypatch):
    """detectron2's COCOeval_opt replaced by a COCOeval that lists the iou types it ran."""
    used = []

    class Unofficial(COCOeval):
        def evaluate(self):
            used.append(self.params.iouType)
            super().evaluate()

    monkeypatch.setattr(d2_coco, "COCOeval_opt", Unofficial)
    return used


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_of_a_box_only_set_are_not_scored_and_its_boxes_are(backend, tmp_path):
    """A Mask R-CNN evaluated on a json without `segmentation`: COCOeval stopped on a
    KeyError after the whole training (detectron2's evaluator too). Now the boxes are scored
    (pycocotools' bbox AP on the same results) and a warning says the masks are not."""
    rng = np.random.default_rng(0)
    anns = _ground_truth(rng)
    name, gt_path = _register(tmp_path, anns)
    results = _perturbed(anns, rng)
    evaluator = COCOMetricsEvaluator(name, output_dir=str(tmp_path / "eval"), backend=backend)
    evaluator.reset()
    for inputs, outputs in _as_model_outputs(results):
        instances = outputs["instances"]
        masks = torch.zeros(len(instances), *SIZE, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, instances.pred_boxes.tensor.int().tolist()):
            mask[y0:y1, x0:x1] = True
        instances.pred_masks = masks
        evaluator.process([inputs], [outputs])
    with captured("detectron2.evaluation.coco_evaluation") as log:
        ours = evaluator.evaluate()
    assert set(ours) == {"bbox"}
    assert any(f"{len(anns)} of its {len(anns)} objects have no 'segmentation'" in m for m in log)
    expected = _pycocotools(gt_path, results)
    tol = 1e-9 if backend == "pycocotools" else 1e-2
    assert all(abs(ours["bbox"][k] - expected[k]) < tol for k in STATS)
