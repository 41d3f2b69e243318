"""A sweep of the evaluation's cases against pycocotools' COCOeval run directly.

One small set holds every kind at once: category ids with gaps, 0 among them, listed out of
order, one category without ground truth; images without ground truth and one without
detections; crowd objects as uncompressed RLE and as polygons. The detections are written
here (jittered truth boxes, wrong classes, false ones) as COCO results and as the model
outputs of the same boxes and masks; the oracle is COCOeval on those results, never our
evaluator's output. Every number ours reports is compared: the 6 stats and each class's AP.
"""
import contextlib
import copy
import io
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnext_det.data.checks import DatasetError
from resnext_det.evaluation.coco import BACKENDS, METRICS_FILE, RESULTS_FILE, COCOMetricsEvaluator
from tests.helpers import register_coco_json

SIZE = (60, 80)  # height, width
CATEGORIES = {9: "nine", 0: "zero", 100: "unseen", 4: "four"}  # json order; 100: no truth
IMAGES = [42, 3, 8, 11, 20, 21, 40, 41]
NO_TRUTH, NO_DETECTIONS = (20, 42), (11,)
STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
NAME = "resnext_det_test_eval_keys"


def _uncompressed_rle(mask):
    """COCO's crowd format: run lengths of the column-major mask, starting with 0s."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    ends = np.concatenate([changes, [flat.size]])
    counts = np.diff(np.concatenate([[0], ends]))
    return [0, *counts.tolist()] if flat[0] else counts.tolist()


def _diamond(x, y, w, h):
    """A polygon inside the box (x, y, w, h), its mask about half the box: mask IoUs and
    areas are not box ones."""
    return [[x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]]


def _mask(polygon):
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygon, *SIZE)))


def _ground_truth(rng):
    anns = []
    for image_id in IMAGES:
        for _ in range(0 if image_id in NO_TRUTH else int(rng.integers(2, 5))):
            w, h = int(rng.integers(6, 40)), int(rng.integers(6, 40))
            x, y = int(rng.integers(0, SIZE[1] - w)), int(rng.integers(0, SIZE[0] - h))
            crowd = int(rng.random() < 0.25)
            segmentation = _diamond(x, y, w, h)
            mask = _mask(segmentation)
            if crowd and rng.random() < 0.5:
                segmentation = {"counts": _uncompressed_rle(mask), "size": list(SIZE)}
            anns.append({"id": len(anns) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                         "category_id": int(rng.choice([9, 0, 4])), "area": float(mask.sum()),
                         "iscrowd": crowd, "segmentation": segmentation})
    return anns


def _detection(image_id, category_id, box, score):
    rle = mask_util.encode(np.asfortranarray(_mask(_diamond(*box))))
    rle["counts"] = rle["counts"].decode()
    return {"image_id": image_id, "category_id": category_id, "score": score,
            "bbox": [float(v) for v in box], "segmentation": rle}


def _detections(anns, rng):
    """Per truth object a box moved by up to 1 px (a fifth with a wrong class), plus 1-3
    false ones per image; none on NO_DETECTIONS. Scores are float32 values."""
    results = []
    for image_id in IMAGES:
        if image_id in NO_DETECTIONS:
            continue
        for ann in (a for a in anns if a["image_id"] == image_id):
            x, y, w, h = (int(v) for v in ann["bbox"])
            x, y = max(0, x + int(rng.integers(-1, 2))), max(0, y + int(rng.integers(-1, 2)))
            w, h = (min(w + int(rng.integers(-1, 2)), SIZE[1] - x),
                    min(h + int(rng.integers(-1, 2)), SIZE[0] - y))
            cat = ann["category_id"] if rng.random() > 0.2 else int(rng.choice(list(CATEGORIES)))
            results.append(_detection(image_id, cat, [x, y, w, h],
                                      float(np.float32(rng.uniform(0.3, 1)))))
        for _ in range(int(rng.integers(1, 4))):
            w, h = int(rng.integers(4, 30)), int(rng.integers(4, 30))
            x, y = int(rng.integers(0, SIZE[1] - w)), int(rng.integers(0, SIZE[0] - h))
            results.append(_detection(image_id, int(rng.choice(list(CATEGORIES))), [x, y, w, h],
                                      float(np.float32(rng.uniform(0, 0.7)))))
    return results


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    """(registered name, json path, COCO results with boxes and masks)."""
    rng = np.random.default_rng(0)
    anns = _ground_truth(rng)
    assert any(a["iscrowd"] and isinstance(a["segmentation"], dict) for a in anns)
    assert any(a["iscrowd"] and isinstance(a["segmentation"], list) for a in anns)
    folder = tmp_path_factory.mktemp("every_kind")
    images = [{"id": i, "file_name": f"{i}.jpg", "height": SIZE[0], "width": SIZE[1]}
              for i in IMAGES]
    categories = [{"id": k, "name": n} for k, n in CATEGORIES.items()]
    register_coco_json(NAME, folder / "gt.json",
                       {"images": images, "annotations": anns, "categories": categories}, folder)
    with contextlib.redirect_stdout(io.StringIO()):
        DatasetCatalog.get(NAME)  # as the test loader loads it: thing_classes, the id mapping
    return NAME, folder / "gt.json", _detections(anns, rng)


def _model_outputs(results, masks=True):
    """(inputs, outputs) per image as a Mask R-CNN returns them: XYXY boxes, contiguous
    classes, full-image masks; an image without detections has empty Instances."""
    to_contiguous = MetadataCatalog.get(NAME).thing_dataset_id_to_contiguous_id
    pairs = []
    for image_id in IMAGES:
        dets = [r for r in results if r["image_id"] == image_id]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]
        instances = Instances(SIZE, pred_boxes=Boxes(torch.tensor(boxes).reshape(-1, 4)),
                              scores=torch.tensor([d["score"] for d in dets]),
                              pred_classes=torch.tensor([to_contiguous[d["category_id"]]
                                                         for d in dets], dtype=torch.int64))
        if masks:
            decoded = [mask_util.decode(d["segmentation"]) for d in dets]
            instances.pred_masks = torch.from_numpy(
                np.stack(decoded) if decoded else np.zeros((0, *SIZE), np.uint8)).bool()
        pairs.append(({"image_id": image_id}, {"instances": instances}))
    return pairs


def _evaluated(evaluator, pairs, img_ids=None):
    evaluator.reset()
    for inputs, outputs in pairs:
        evaluator.process([inputs], [outputs])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate(img_ids)


def _ours(folder, results, backend, masks=True, img_ids=None, **kwargs):
    evaluator = COCOMetricsEvaluator(NAME, output_dir=str(folder), backend=backend, **kwargs)
    return _evaluated(evaluator, _model_outputs(results, masks), img_ids)


def _mean(precision):
    precision = precision[precision > -1]
    return 100 * precision.mean() if precision.size else math.nan


def _pycocotools(gt_path, results, iou_type, dt=None, **params):
    """COCOeval run directly ("segm": the results without boxes, as COCO's format has them;
    `dt`: a COCO result set instead of `results`); every number read off its precision at
    maxDets[-1], as detectron2 reads a custom max detections: with [1, 10, 100], its stats."""
    drop = "bbox" if iou_type == "segm" else "segmentation"
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        dt = dt or coco_gt.loadRes([{k: v for k, v in r.items() if k != drop}
                                    for r in copy.deepcopy(results)])
        coco_eval = COCOeval(coco_gt, dt, iou_type)
        for name, value in params.items():
            setattr(coco_eval.params, name, value)
        coco_eval.evaluate(), coco_eval.accumulate()
    p = coco_eval.eval["precision"][..., -1]  # T x R x K x A
    metrics = dict(zip(STATS, [_mean(p[..., 0]), _mean(p[0, ..., 0]), _mean(p[5, ..., 0]),
                               _mean(p[..., 1]), _mean(p[..., 2]), _mean(p[..., 3])]))
    for k, cat_id in enumerate(coco_eval.params.catIds):
        metrics[f"AP-{CATEGORIES[cat_id]}"] = _mean(p[:, :, k, 0])
    return metrics


def _assert_same(ours, expected, backend):
    tol = 1e-9 if backend == "pycocotools" else 1e-2  # faster-coco-eval: test_eval_backends.py
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert (math.isnan(ours[key]) if math.isnan(value) else abs(ours[key] - value) < tol), (
            key, ours[key], value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_number_of_a_set_of_every_kind_is_pycocotools(every_kind, backend, tmp_path):
    """Boxes and masks; the files equal those detectron2's COCOEvaluator writes for the same
    outputs, and coco_metrics.json holds the numbers returned."""
    name, gt_path, results = every_kind
    ours = _ours(tmp_path / "ours", results, backend)
    assert set(ours) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        expected = _pycocotools(gt_path, results, task)
        assert 20 < expected["AP"] < 80 and math.isnan(expected["AP-unseen"])  # all cases count
        _assert_same(ours[task], expected, backend)
    reference = COCOEvaluator(name, output_dir=str(tmp_path / "d2"), use_fast_impl=False)
    _evaluated(reference, _model_outputs(results))
    assert (json.loads((tmp_path / "ours" / RESULTS_FILE).read_text())
            == json.loads((tmp_path / "d2" / RESULTS_FILE).read_text()))
    pth = [torch.load(tmp_path / folder / "instances_predictions.pth", weights_only=True)
           for folder in ("ours", "d2")]
    assert pth[0] == pth[1] and len(pth[0]) == len(IMAGES)
    written = json.loads((tmp_path / "ours" / METRICS_FILE).read_text())
    assert written == json.loads(json.dumps({"dataset": name, **ours}))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("max_dets", [1, 300])
def test_custom_max_detections_are_pycocotools_maxdets(every_kind, backend, max_dets, tmp_path):
    """max_dets_per_image (detectron2's argument): COCOeval's maxDets [1, 10, max_dets],
    which COCOeval sorts (1: [1, 1, 10], so at most 10 per image and class)."""
    _, gt_path, results = every_kind
    ours = _ours(tmp_path, results, backend, max_dets_per_image=max_dets)
    for task in ("bbox", "segm"):
        expected = _pycocotools(gt_path, results, task, maxDets=[1, 10, max_dets])
        _assert_same(ours[task], expected, "pycocotools")  # detectron2's path on both


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_subset_of_images_is_pycocotools_on_that_subset(every_kind, backend, tmp_path):
    """evaluate(img_ids): the other images' truth and detections count for nothing."""
    _, gt_path, results = every_kind
    subset = [3, 11, 20, 41]
    ours = _ours(tmp_path, results, backend, img_ids=subset)
    for task in ("bbox", "segm"):
        _assert_same(ours[task], _pycocotools(gt_path, results, task, imgIds=subset), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_at_all_score_0_as_coco_defines(every_kind, backend, tmp_path):
    """A model that detects nothing (early in a training, a high SCORE_THRESH_TEST):
    COCOeval on an empty result set gives 0 where there is truth, -1 (NaN) where none.
    detectron2 reported NaN for every number and no per-class AP."""
    _, gt_path, results = every_kind
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        empty = COCO()
        empty.dataset = {"images": coco_gt.dataset["images"], "annotations": [],
                         "categories": coco_gt.dataset["categories"]}
        empty.createIndex()
    expected = _pycocotools(gt_path, [], "bbox", dt=empty)
    assert expected["AP"] == 0 and math.isnan(expected["AP-unseen"])
    ours = _ours(tmp_path, [], backend)
    assert set(ours) == {"bbox"}  # no masks predicted: the tasks are read off the results
    _assert_same(ours["bbox"], expected, backend)
    assert json.loads((tmp_path / RESULTS_FILE).read_text()) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_class_the_set_lacks_is_an_error_naming_the_set(every_kind, backend, tmp_path):
    """A model of more classes than the set (contiguous class 4 of a 4-class set) stopped on
    a KeyError (faster-coco-eval) or detectron2's AssertionError (pycocotools)."""
    _, _, results = every_kind
    pairs = _model_outputs(results, masks=False)
    instances = pairs[1][1]["instances"]
    instances.pred_classes[0] = len(CATEGORIES)
    evaluator = COCOMetricsEvaluator(NAME, output_dir=str(tmp_path), backend=backend)
    with pytest.raises(DatasetError, match=rf"{NAME}: the model predicted classes \[4\], but "
                                           r"the dataset has 4 \(0..3\)"):
        _evaluated(evaluator, pairs)


def test_a_second_evaluation_into_the_same_folder_replaces_the_first_wholly(every_kind,
                                                                            tmp_path):
    """Masks on pycocotools, then boxes only (fewer detections) on faster-coco-eval: the
    folder then holds the files the second alone writes into an empty one, and no other."""
    _, _, results = every_kind
    _ours(tmp_path / "twice", results, "pycocotools")
    second = results[::2]
    _ours(tmp_path / "twice", second, "faster-coco-eval", masks=False)
    _ours(tmp_path / "once", second, "faster-coco-eval", masks=False)
    files = {folder: {p.name: p for p in (tmp_path / folder).iterdir()}
             for folder in ("twice", "once")}
    assert files["twice"].keys() == files["once"].keys() == {
        METRICS_FILE, RESULTS_FILE, "instances_predictions.pth"}
    for name in (METRICS_FILE, RESULTS_FILE):
        assert files["twice"][name].read_bytes() == files["once"][name].read_bytes(), name
    pth = [torch.load(files[k]["instances_predictions.pth"], weights_only=True)
           for k in ("twice", "once")]
    assert pth[0] == pth[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_set_without_ground_truth_gets_its_detections_written_not_scored(every_kind, backend,
                                                                          tmp_path):
    """A json of images and categories only (COCO's test-dev image lists): detectron2's
    COCOEvaluator writes the detections (for COCO's server) and scores nothing; ours stopped
    on KeyError 'annotations' after the whole inference. Evaluated into a folder that held
    another evaluation, it leaves no coco_metrics.json of that one."""
    name, gt_path, results = every_kind
    data = json.loads(gt_path.read_text())
    del data["annotations"]
    images_only = f"{name}_images_only"
    register_coco_json(images_only, tmp_path / "images_only.json", data, tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        DatasetCatalog.get(images_only)
    _ours(tmp_path / "ours", results, backend)  # an evaluation with metrics, first
    assert (tmp_path / "ours" / METRICS_FILE).is_file()
    ours = _evaluated(COCOMetricsEvaluator(images_only, output_dir=str(tmp_path / "ours"),
                                           backend=backend), _model_outputs(results))
    reference = COCOEvaluator(images_only, output_dir=str(tmp_path / "d2"), use_fast_impl=False)
    assert ours == _evaluated(reference, _model_outputs(results)) == {}
    assert (json.loads((tmp_path / "ours" / RESULTS_FILE).read_text())
            == json.loads((tmp_path / "d2" / RESULTS_FILE).read_text()))
    assert not (tmp_path / "ours" / METRICS_FILE).exists()


def test_eval_only_with_more_classes_than_the_test_set_stops_before_inference(
        datasets_root, tmp_path, monkeypatch, capsys):
    """--eval-only of a model of 11 classes (weights that store no class names, e.g.
    detectron2's) on digits_val's 10: after the whole inference, the evaluation stopped on a
    KeyError where the model predicted class 10. Now one error line at start."""
    from resnext_det.data import register_digits
    from tests.engine.test_train_net import (CONFIG, TINY, GroundTruthDetector,
                                             _ground_truth_model, _user_error)

    inferred = []

    class ElevenClasses(GroundTruthDetector):
        """The truth, its first box labelled class 10 (the 11th)."""

        def forward(self, batched_inputs):
            inferred.append(len(batched_inputs))
            outputs = super().forward(batched_inputs)
            outputs[0]["instances"].pred_classes[:1] = 10
            return outputs

    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    register_digits(datasets_root / "digits")
    weights = _ground_truth_model(monkeypatch, tmp_path, ElevenClasses)
    error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", "MODEL.WEIGHTS",
                                 weights, *map(str, TINY), "MODEL.ROI_HEADS.NUM_CLASSES", "11",
                                 "OUTPUT_DIR", str(tmp_path / "eval")])
    assert error.startswith("error: MODEL.ROI_HEADS.NUM_CLASSES=11 does not match "
                            "DATASETS.TEST: dataset 'digits_val' has 10 classes")
    assert "Set MODEL.ROI_HEADS.NUM_CLASSES 10 if MODEL.WEIGHTS were trained" in error
    assert inferred == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_of_a_keypoint_model_score_0_as_coco_defines(backend, tmp_path):
    """tasks ("bbox", "keypoints") given (detectron2's argument) and nothing detected:
    the keypoints went to faster-coco-eval's COCOeval, which stopped on an AttributeError
    (cat_img_map, its own COCO's) after the whole inference; with detections they go to
    pycocotools', which scores an empty result set 0 where there is truth."""
    name = f"{NAME}_keypoints"
    images = [{"id": i, "file_name": f"{i}.jpg", "height": SIZE[0], "width": SIZE[1]}
              for i in (1, 2)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 12, 30, 20], "area": 600,
             "iscrowd": 0, "num_keypoints": 3, "keypoints": [15, 15, 2, 25, 20, 2, 35, 25, 1]}
            for i in (1, 2)]
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}]}
    register_coco_json(name, tmp_path / "keypoints.json", data, tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        DatasetCatalog.get(name)
        coco_gt = COCO(str(tmp_path / "keypoints.json"))
        empty = COCO()
        empty.dataset = {"images": images, "annotations": [], "categories": data["categories"]}
        empty.createIndex()
    nothing = Instances(SIZE, pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                        pred_classes=torch.zeros(0, dtype=torch.int64),
                        pred_keypoints=torch.zeros(0, 3, 3))
    evaluator = COCOMetricsEvaluator(name, output_dir=str(tmp_path / "out"), backend=backend,
                                     tasks=("bbox", "keypoints"), kpt_oks_sigmas=[0.05] * 3)
    ours = _evaluated(evaluator, [({"image_id": i}, {"instances": nothing}) for i in (1, 2)])
    for task, metrics in (("bbox", STATS), ("keypoints", ["AP", "AP50", "AP75", "APm", "APl"])):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = COCOeval(coco_gt, empty, task)
            coco_eval.evaluate(), coco_eval.accumulate(), coco_eval.summarize()
        expected = {m: 100 * s if s >= 0 else math.nan for m, s in zip(metrics, coco_eval.stats)}
        assert expected["AP"] == 0
        _assert_same({m: ours[task][m] for m in metrics}, expected, backend)
