"""faster-coco-eval (our default COCOeval) gives pycocotools' numbers.

On detections of the digits val set fed through our evaluator, and on a generated set of
5,000 images / 100,000 detections with boxes of every size, crowd boxes, images without
ground truth and wrong classes: all 12 stats and every per-category AP agree within 1e-4.
"""
import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnext_det.data import register_digits
from resnext_det.evaluation.coco import RESULTS_FILE, COCOMetricsEvaluator, evaluate_on_coco
from tests.helpers import pycocotools_stats

TOL = 1e-4


def generated_set(num_images=5000, dets_per_image=20, num_classes=20, seed=0):
    """(COCO ground truth dict, result dicts): sizes 4 px to 90% of the image, 3% crowd,
    10% of images without ground truth; 60% of detections jitter a true box (a fifth of
    them with a wrong class), the rest are random boxes."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        w, h = int(rng.integers(200, 1000)), int(rng.integers(200, 1000))
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        truth = []
        for _ in range(0 if rng.random() < 0.1 else int(rng.integers(1, 12))):
            size = float(np.exp(rng.uniform(np.log(4), np.log(min(w, h) * 0.9))))
            bw, bh = size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)
            box = [rng.uniform(0, max(1, w - bw)), rng.uniform(0, max(1, h - bh)), bw, bh]
            cls = int(rng.integers(1, num_classes + 1))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cls,
                         "bbox": box, "area": bw * bh, "iscrowd": int(rng.random() < 0.03)})
            truth.append((box, cls))
        for _ in range(dets_per_image):
            if truth and rng.random() < 0.6:
                (x, y, bw, bh), cls = truth[int(rng.integers(len(truth)))]
                box = [x + rng.normal(0, 0.1) * bw, y + rng.normal(0, 0.1) * bh,
                       bw * np.exp(rng.normal(0, 0.15)), bh * np.exp(rng.normal(0, 0.15))]
                cls = cls if rng.random() > 0.2 else int(rng.integers(1, num_classes + 1))
            else:
                size = float(np.exp(rng.uniform(np.log(4), np.log(min(w, h) * 0.9))))
                box = [rng.uniform(0, w - size), rng.uniform(0, h - size), size, size]
                cls = int(rng.integers(1, num_classes + 1))
            results.append({"image_id": image_id, "category_id": cls,
                            "bbox": [float(v) for v in box], "score": float(rng.random())})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, results


def _coco(dataset):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _per_category_ap(coco_eval):
    """AP per category (IoU 0.5:0.95, all areas, 100 detections), -1 where undefined."""
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    return np.array([p[p > -1].mean() if (p > -1).any() else -1
                     for p in np.moveaxis(precision, 2, 0)])


def test_large_generated_set_gives_pycocotools_numbers():
    dataset, results = generated_set()
    assert len(results) == 100_000 and any(a["iscrowd"] for a in dataset["annotations"])
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        fast = evaluate_on_coco(gt, [dict(r) for r in results], "bbox", "faster-coco-eval")
        slow = evaluate_on_coco(gt, [dict(r) for r in results], "bbox", "pycocotools")
    assert len(fast.stats) == len(slow.stats) == 12
    assert np.abs(np.asarray(fast.stats) - np.asarray(slow.stats)).max() < TOL
    assert 0.05 < slow.stats[0] < 0.5  # a set where AP means something
    fast_ap, slow_ap = _per_category_ap(fast), _per_category_ap(slow)
    assert len(slow_ap) == 20 and np.abs(fast_ap - slow_ap).max() < TOL


def _digits_outputs(dataset_name, seed=0):
    """Jittered ground truth and false positives on the digits val images, as model outputs."""
    rng = np.random.default_rng(seed)
    inputs, outputs = [], []
    for record in DatasetCatalog.get(dataset_name):
        boxes, classes = [], []
        for ann in record["annotations"]:
            x, y, w, h = np.asarray(ann["bbox"]) + rng.normal(0, 1.5, 4)
            boxes.append([x, y, x + abs(w), y + abs(h)])
            classes.append(ann["category_id"] if rng.random() > 0.2 else int(rng.integers(10)))
        for _ in range(3):
            x, y = rng.uniform(0, record["width"] - 20, 2)
            boxes.append([x, y, x + 20, y + 20])
            classes.append(int(rng.integers(10)))
        instances = Instances((record["height"], record["width"]))
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        instances.scores = torch.tensor(rng.uniform(0.05, 1, len(boxes)), dtype=torch.float32)
        instances.pred_classes = torch.tensor(classes)
        inputs.append({"image_id": record["image_id"]})
        outputs.append({"instances": instances})
    return inputs, outputs


@pytest.fixture
def digits_val(datasets_root):
    register_digits(datasets_root / "digits")
    return "digits_val"


def test_digits_detections_through_our_evaluator(digits_val, tmp_path):
    """Both backends give pycocotools' numbers, its COCOeval run here on the digits val json
    with the results detectron2's own COCOEvaluator writes for the same outputs (its
    instances_to_coco_json and dataset ids): all 6 stats and each class's AP; and our
    results file (orjson) holds what detectron2's (json.dumps) does, number for number."""
    outputs = _digits_outputs(digits_val)
    reference = COCOEvaluator(digits_val, tasks=("bbox",), output_dir=str(tmp_path / "d2"))
    reference.reset()
    reference.process(*outputs)
    with contextlib.redirect_stdout(io.StringIO()):  # its pycocotools summary
        reference.evaluate()
    expected_results = json.loads((tmp_path / "d2" / RESULTS_FILE).read_text())
    assert len(expected_results) > 10
    json_file = MetadataCatalog.get(digits_val).json_file
    expected = pycocotools_stats(json_file, expected_results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(json_file)
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(expected_results)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    names = [c["name"] for c in coco_gt.loadCats(coco_eval.params.catIds)]  # sorted ids
    expected.update({f"AP-{name}": 100 * ap if ap >= 0 else math.nan
                     for name, ap in zip(names, _per_category_ap(coco_eval))})
    assert expected["AP50"] > 30  # jittered ground truth: a meaningful score, not 0
    assert sum(v > 0 for v in expected.values()) >= 8  # most stats and classes nonzero
    for backend in ("faster-coco-eval", "pycocotools"):
        evaluator = COCOMetricsEvaluator(digits_val, output_dir=str(tmp_path / backend),
                                         backend=backend)
        evaluator.reset()
        evaluator.process(*outputs)
        metrics = evaluator.evaluate()["bbox"]
        assert metrics.keys() == expected.keys(), backend
        assert metrics == pytest.approx(expected, abs=100 * TOL, nan_ok=True), backend
        written = json.loads((tmp_path / backend / RESULTS_FILE).read_text())
        assert written == expected_results, backend


def test_no_fast_eval_fallback_message_with_faster_coco_eval(digits_val, tmp_path, caplog):
    """detectron2 without _C logs that it falls back to the slow COCOeval; with our C++
    backend that line is false, and must not appear; with pycocotools, which runs that
    official COCOeval as asked (not detectron2's C++ one where it is built), neither."""
    logged = {}
    for backend in ("faster-coco-eval", "pycocotools"):
        caplog.clear()
        with caplog.at_level("INFO"):
            COCOMetricsEvaluator(digits_val, output_dir=str(tmp_path), backend=backend)
        logged[backend] = "Fast COCO eval is not built" in caplog.text
    assert logged == {"faster-coco-eval": False, "pycocotools": False}


def test_predictions_and_results_files_equal_detectron2s(digits_val, tmp_path):
    """Our evaluator keeps box detections as arrays until evaluate(): the files it writes
    (instances_predictions.pth, coco_instances_results.json) hold what detectron2's own
    COCOEvaluator writes from the same outputs, an image without detections included."""
    inputs, outputs = _digits_outputs(digits_val)
    outputs[1] = {"instances": outputs[1]["instances"][:0]}
    written = {}
    for name, evaluator in (
            ("ours", COCOMetricsEvaluator(digits_val, output_dir=str(tmp_path / "ours"))),
            ("detectron2", COCOEvaluator(digits_val, output_dir=str(tmp_path / "detectron2")))):
        evaluator.reset()
        for one_input, output in zip(inputs, outputs):
            evaluator.process([one_input], [output])
        evaluator.evaluate()
        folder = tmp_path / name
        written[name] = (torch.load(folder / "instances_predictions.pth", weights_only=True),
                         json.loads((folder / RESULTS_FILE).read_text()))
    (ours_pth, ours_json), (their_pth, their_json) = written["ours"], written["detectron2"]
    assert len(their_pth) == len(inputs) and their_pth[1]["instances"] == []
    assert ours_pth == their_pth
    assert len(their_json) > 10 and ours_json == their_json


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_a_kill_while_writing_keeps_the_previous_evaluations_files(digits_val, tmp_path,
                                                                    monkeypatch, backend):
    """A second evaluation killed while writing instances_predictions.pth (detectron2's
    torch.save) leaves the first evaluation's files whole; one that ends replaces both, and
    no staging folder is left, nor one a killed process left before."""
    from detectron2.evaluation import coco_evaluation

    inputs, outputs = _digits_outputs(digits_val)

    def run():
        evaluator = COCOMetricsEvaluator(digits_val, output_dir=str(tmp_path), backend=backend)
        evaluator.reset()
        evaluator.process(inputs, outputs)
        return evaluator.evaluate()

    run()
    first = {name: (tmp_path / name).read_bytes()
             for name in ("instances_predictions.pth", RESULTS_FILE)}
    real_save = torch.save

    def killed_save(obj, f, *args, **kwargs):
        f.write(b"\x80\x02cut")  # part of a file, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(coco_evaluation.torch, "save", killed_save)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(coco_evaluation.torch, "save", real_save)
    assert {name: (tmp_path / name).read_bytes() for name in first} == first
    dead = Path(f"{tmp_path}.staging.tmp-999999999")  # beside the folder; no such pid
    dead.mkdir()
    (dead / "instances_predictions.pth").write_bytes(b"cut")
    outputs[0] = {"instances": outputs[0]["instances"][:0]}
    run()
    second = torch.load(tmp_path / "instances_predictions.pth", weights_only=True)
    assert second[0]["instances"] == [] and (tmp_path / RESULTS_FILE).read_bytes() != first[RESULTS_FILE]
    assert not list(tmp_path.glob(".staging*")) and not dead.exists()
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.*.tmp-*"))


def _pycocotools_stats(gt, results, **params):
    """pycocotools' COCOeval run by hand, `params` set on its Params: the oracle."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "bbox")
        for name, value in params.items():
            setattr(coco_eval.params, name, value)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats)


def test_a_subset_of_images_and_class_agnostic_ap_give_pycocotools_numbers():
    """evaluate_on_coco(img_ids=...) on both backends, and our C++ COCOeval (whose box IoUs
    we compute) with useCats=0, against pycocotools' COCOeval given the same params."""
    from resnext_det.evaluation.coco import cocoeval_class

    dataset, results = generated_set(num_images=300, dets_per_image=10)
    gt = _coco(dataset)
    subset = sorted(gt.getImgIds())[::3]
    want = _pycocotools_stats(gt, results, imgIds=subset)
    assert np.abs(want - _pycocotools_stats(gt, results)).max() > 0.005  # the subset matters
    for backend in ("faster-coco-eval", "pycocotools"):
        with contextlib.redirect_stdout(io.StringIO()):
            got = evaluate_on_coco(gt, [dict(r) for r in results], "bbox", backend, img_ids=subset)
        assert np.abs(np.asarray(got.stats) - want).max() < TOL, backend
    agnostic = _pycocotools_stats(gt, results, useCats=0)
    assert agnostic[0] > _pycocotools_stats(gt, results)[0] + 0.01  # wrong classes count here
    with contextlib.redirect_stdout(io.StringIO()):
        ours = cocoeval_class("faster-coco-eval")(gt, gt.loadRes([dict(r) for r in results]), "bbox")
        ours.params.useCats = 0
        ours.evaluate()
        ours.accumulate()
        ours.summarize()
    assert np.abs(np.asarray(ours.stats) - agnostic).max() < TOL


def _l_shape(x, y, size, thickness):
    """An L-shaped polygon: its box is size x size, its area about 2 * size * thickness."""
    return [[x, y, x + thickness, y, x + thickness, y + size - thickness, x + size,
             y + size - thickness, x + size, y + size, x, y + size]]


def test_mask_ap_sorts_objects_by_mask_area_not_box_area():
    """Thin L-shaped objects (mask area small, box area medium) with detections that carry a
    box, as detectron2's results do: our segm numbers are pycocotools' on the results
    without boxes (COCO's segm result format), not those of loadRes' box branch."""
    import pycocotools.mask as mask_util

    from resnext_det.evaluation.coco import BACKENDS

    rng = np.random.default_rng(0)
    images, anns, results = [], [], []
    for image_id in range(1, 21):
        images.append({"id": image_id, "width": 200, "height": 200, "file_name": f"{image_id}.png"})
        for _ in range(3):
            x, y = (float(v) for v in rng.uniform(0, 120, 2))
            size, thick = float(rng.uniform(40, 70)), float(rng.uniform(3, 6))
            poly = _l_shape(x, y, size, thick)
            rle = mask_util.merge(mask_util.frPyObjects(poly, 200, 200))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "segmentation": poly, "area": float(mask_util.area(rle)),
                         "bbox": [x, y, size, size], "iscrowd": 0})
            shift = float(rng.normal(0, 2))
            det = mask_util.merge(mask_util.frPyObjects(_l_shape(x + shift, y, size, thick), 200, 200))
            det["counts"] = det["counts"].decode()
            results.append({"image_id": image_id, "category_id": 1, "segmentation": det,
                            "bbox": [x + shift, y, size, size], "score": float(rng.random())})
    gt = _coco({"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "L"}]})
    assert all(a["area"] < 32 ** 2 < a["bbox"][2] * a["bbox"][3] for a in anns)

    def pycocotools_segm(dets):
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = COCOeval(gt, gt.loadRes(dets), "segm")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        return np.asarray(coco_eval.stats)

    want = pycocotools_segm([{k: v for k, v in r.items() if k != "bbox"} for r in results])
    boxed = pycocotools_segm([dict(r) for r in results])
    assert want[3] > 0 and abs(want[3] - boxed[3]) > 0.05  # APs: detections small by mask only
    for backend in BACKENDS:
        with contextlib.redirect_stdout(io.StringIO()):
            got = evaluate_on_coco(gt, [dict(r) for r in results], "segm", backend)
        assert np.abs(np.asarray(got.stats) - want).max() < TOL, backend
