"""The all-pairs box IoUs equal faster-coco-eval's own per-pair computeIoU, matrix by matrix.

The oracle is COCOeval_faster.computeIoU (faster-coco-eval's Python loop over pairs, with
its C++ bbIou), run on the same prepared evaluation; the set has crowd boxes, score ties,
pairs with more detections than maxDets and images without ground truth.
"""
import contextlib
import io

import numpy as np
from faster_coco_eval import COCOeval_faster

from resnext_det.evaluation.box_iou import BoxIoUCOCOeval

from .test_eval_backends import _coco, generated_set


def _prepared(cls, gt, results, max_dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = cls(gt, gt.loadRes([dict(r) for r in results]), "bbox")
    coco_eval.params.maxDets = max_dets
    coco_eval._prepare()
    return coco_eval


def _tied_and_crowded(results, pair, rng):
    """Scores rounded to 0.1 (many ties within a pair) and 150 more detections for one
    (image, category) pair (more than maxDets)."""
    results = [dict(r, score=round(r["score"], 1)) for r in results]
    results += [{"image_id": pair[0], "category_id": pair[1], "score": float(rng.random()),
                 "bbox": [float(v) for v in rng.uniform(0, 100, 4)]} for _ in range(150)]
    return results


def test_all_pair_ious_equal_the_per_pair_ones():
    rng = np.random.default_rng(1)
    dataset, results = generated_set(num_images=400, dets_per_image=30, num_classes=5)
    assert any(a["iscrowd"] for a in dataset["annotations"])
    gt = _coco(dataset)
    first = dataset["annotations"][0]
    crowded = (first["image_id"], first["category_id"])
    results = _tied_and_crowded(results, crowded, rng)
    for max_dets in ([1, 10, 100], [1, 10, 5]):
        ours = _prepared(BoxIoUCOCOeval, gt, results, sorted(max_dets))
        theirs = _prepared(COCOeval_faster, gt, results, sorted(max_dets))
        compared = overlapping = 0
        for img_id in gt.getImgIds():
            for cat_id in gt.getCatIds():
                expected = np.asarray(theirs.computeIoU(img_id, cat_id))
                got = np.asarray(ours.computeIoU(img_id, cat_id))
                assert got.shape == expected.shape, (img_id, cat_id)
                assert np.array_equal(got, expected), (img_id, cat_id)
                compared += expected.size > 0
                overlapping += bool(expected.size and (expected > 0).any())
        assert compared > 1000 and overlapping > 500
        assert ours._box_ious[crowded].shape[0] == sorted(max_dets)[-1]


def test_masks_keep_the_per_pair_path():
    dataset, results = generated_set(num_images=5, dets_per_image=3, num_classes=2)
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = BoxIoUCOCOeval(gt, gt.loadRes([dict(r) for r in results]), "segm")
    coco_eval.params.maxDets = [1, 10, 100]
    coco_eval._prepare()
    assert coco_eval._box_ious is None
