"""Evaluation against detectron2's own inference, one inference-affecting key at a time.

Ours: tools/train_net.py --eval-only's body (engine.train.evaluate: Trainer.build_model, our
checkpointer, Trainer.test on the FAST_INFERENCE copy: norms folded, channels_last, the
sparse ROIAlign, INFERENCE_DTYPE; our test loader and COCOMetricsEvaluator on
faster-coco-eval). The peer: detectron2 alone on the same config and weights file
(build_model, DetectionCheckpointer, build_detection_test_loader, inference_on_dataset,
COCOEvaluator on pycocotools). A key that detectron2 honours and our copy dropped would
show as other detections or another AP.

Each model is tiny and random, with random norm statistics (randomize_norms_: folding has
to get them right) and class scores spread as a trained model's are, so thresholds, NMS
and the per-image cut bite. Three colour pictures of three sizes (INPUT.FORMAT and the
resize matter); their ground truth is the default model's best detections by detectron2,
so the AP is far from 0 and moves with the keys. Each case checks that its key changes
detectron2's detections (else it would prove nothing), then that ours are the same:
scores, classes, boxes and keypoints to 1e-3 (float rounding; 1.5e-5 the largest seen over
these cases, on coordinates up to 96 px), masks to 0.1% of their pixels, every AP to 1e-3
(faster-coco-eval gives pycocotools' numbers to 1e-4).
"""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import keypoint_head
from detectron2.structures import heatmaps_to_keypoints
from PIL import Image

import resnext_det
from resnext_det.engine.train import evaluate
from resnext_det.engine.trainer import inference_model
from resnext_det.utils.testing import randomize_norms_
from tests.helpers import register_coco_json
from tests.tools.test_predict import spread_class_scores_

ROOT = Path(__file__).resolve().parents[2]
BASES = {"fpn": "Base-RCNN-FPN-ResNeXt.yaml", "c4": "Base-RCNN-C4-ResNeXt.yaml",
         "retinanet": "Base-RetinaNet-ResNeXt.yaml"}
SIZES = ((64, 64), (48, 80), (80, 56))  # (height, width): resized to 64 px short sides, <= 96
TINY = ["MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 16, "MODEL.FPN.OUT_CHANNELS", 16,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
        "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16], "MODEL.BACKBONE.FREEZE_AT", 0,
        "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96,
        "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.RETINANET.NUM_CLASSES", 3,
        "MODEL.ANCHOR_GENERATOR.SIZES", [[8], [16], [32], [64], [128]],
        "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
        "TEST.DETECTIONS_PER_IMAGE", 30, "DATALOADER.NUM_WORKERS", 0, "MODEL.DEVICE", "cpu"]
FAMILY = {"c4": ["MODEL.ANCHOR_GENERATOR.SIZES", [[8, 16, 32]]],  # one feature map: res4
          # P3..P7: anchors twice their stride, so that neighbours overlap and NMS bites
          "retinanet": ["MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]]]}
KEYPOINTS = ["MODEL.KEYPOINT_ON", True, "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 17]
MASKS = ["MODEL.MASK_ON", True, "TEST.DETECTIONS_PER_IMAGE", 10]  # pasting is the slow part

# (family, the keys set away from the family's default)
CASES = {
    "fpn": ("fpn", []),
    "group-norms": ("fpn", ["MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
                            "MODEL.RESNEXT.TEMPLATE", "", "MODEL.RESNETS.NUM_GROUPS", 32,
                            "MODEL.RESNETS.WIDTH_PER_GROUP", 1,  # GN: widths of 32 groups
                            "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
                            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32]),
    "stride-in-1x1": ("fpn", ["MODEL.RESNETS.STRIDE_IN_1X1", True]),
    "block-form-a": ("fpn", ["MODEL.RESNEXT.BLOCK_FORM", "a"]),  # its norm after the sum folds
    "score-thresh": ("fpn", ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.9]),
    "nms-thresh": ("fpn", ["MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.2]),
    "detections-per-image": ("fpn", ["TEST.DETECTIONS_PER_IMAGE", 7]),
    "rpn-post-nms-topk": ("fpn", ["MODEL.RPN.POST_NMS_TOPK_TEST", 20]),
    "rpn-pre-nms-topk": ("fpn", ["MODEL.RPN.PRE_NMS_TOPK_TEST", 15]),
    "rpn-nms-thresh": ("fpn", ["MODEL.RPN.NMS_THRESH", 0.3]),
    "min-size": ("fpn", ["INPUT.MIN_SIZE_TEST", 48]),
    "max-size": ("fpn", ["INPUT.MAX_SIZE_TEST", 72]),
    "bgr": ("fpn", ["INPUT.FORMAT", "BGR"]),
    "pixel-stats": ("fpn", ["MODEL.PIXEL_MEAN", [10.0, 120.0, 200.0],
                            "MODEL.PIXEL_STD", [20.0, 30.0, 90.0]]),
    "roialign-v1": ("fpn", ["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign"]),
    "roipool": ("fpn", ["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool"]),
    "sampling-ratio": ("fpn", ["MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2]),
    "box-head-convs-gn": ("fpn", ["MODEL.ROI_BOX_HEAD.NUM_CONV", 2, "MODEL.ROI_BOX_HEAD.CONV_DIM",
                                  32, "MODEL.ROI_BOX_HEAD.NORM", "GN"]),
    "agnostic-boxes": ("fpn", ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True]),
    "box-reg-weights": ("fpn", ["MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", [5.0, 5.0, 2.0, 2.0]]),
    "mask-rcnn": ("fpn", MASKS),
    "agnostic-masks": ("fpn", [*MASKS, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True]),
    "keypoint-rcnn": ("fpn", KEYPOINTS),
    "c4": ("c4", []),
    "c4-mask": ("c4", MASKS),
    "retinanet": ("retinanet", []),
    "retinanet-score-thresh": ("retinanet", ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.8]),
    "retinanet-topk": ("retinanet", ["MODEL.RETINANET.TOPK_CANDIDATES_TEST", 20]),
    "retinanet-nms": ("retinanet", ["MODEL.RETINANET.NMS_THRESH_TEST", 0.2]),
    # resnext_det's own keys, which detectron2 does not read: ours must equal its one model
    "not-fast": ("fpn", ["MODEL.RESNEXT.FAST_INFERENCE", ""]),
    "fold-only": ("fpn", ["MODEL.RESNEXT.FAST_INFERENCE", "fold"]),
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Three smooth random colour pictures of SIZES, as PNG files; their folder."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.BILINEAR).save(folder / f"{i}.png")
    return folder


def _register(name, folder, annotations):
    """COCO set `name` over `pictures` with `annotations` (with keypoint names, which
    detectron2's test mapper reads for Keypoint R-CNN)."""
    images = [{"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w}
              for i, (h, w) in enumerate(SIZES)]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": k, "name": f"class{k}"} for k in (1, 2, 3)]}
    register_coco_json(name, folder / f"{name}.json", data, folder)
    names = [f"point{k}" for k in range(17)]
    MetadataCatalog.get(name).set(keypoint_names=names, keypoint_flip_map=[(names[1], names[2])])


def _ground_truth(results, per_image=3):
    """Annotations: each picture's `per_image` best detections of `results` (COCO results),
    with the box as polygon and 17 keypoints visible on a grid inside it."""
    annotations = []
    for image_id in sorted({r["image_id"] for r in results}):
        best = sorted((r for r in results if r["image_id"] == image_id), key=lambda r: -r["score"])
        for r in best[:per_image]:
            x, y, w, h = r["bbox"]
            points = [[x + w * (k % 4 + 0.5) / 4, y + h * (k // 4 + 0.5) / 5, 2] for k in range(17)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": r["category_id"], "bbox": [x, y, w, h],
                                "area": w * h, "num_keypoints": 17,
                                "keypoints": [v for p in points for v in p],
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return annotations


def _cfg(family, opts, dataset, folder):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(ROOT / "configs" / BASES[family]))
    cfg.merge_from_list([*TINY, *FAMILY.get(family, []), *opts, "DATASETS.TEST", (dataset,),
                         "DATASETS.TRAIN", (dataset,), "OUTPUT_DIR", str(folder / "ours")])
    return cfg


def _spread_dense_scores_(model, image):
    """A RetinaNet whose anchors score as a trained one's: its subnets' convolutions He-
    initialized (detectron2's std 0.01 leaves the logits all but constant), the class
    logits of the finest level on `image` scaled to std 2 around -3 (a 5% score)."""
    head = model.head
    with torch.no_grad():
        for m in [*head.cls_subnet, *head.bbox_subnet]:
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        seen = []
        hook = head.cls_score.register_forward_hook(lambda m, args, out: seen.append(out))
        model.eval()([{"image": image, "height": image.shape[1], "width": image.shape[2]}])
        hook.remove()
        scale = 2.0 / seen[0].std()
        head.cls_score.weight.mul_(scale)
        head.cls_score.bias.copy_(head.cls_score.bias * scale - seen[0].median() * scale - 3.0)
    return model.train()


def _weights(cfg, folder, pictures):
    """A tiny random model of `cfg`, saved by DetectionCheckpointer; its file."""
    torch.manual_seed(0)
    model = randomize_norms_(build_model(cfg))
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        image = torch.from_numpy(np.asarray(Image.open(pictures / "0.png"))[:, :, ::-1].copy())
        _spread_dense_scores_(model, image.permute(2, 0, 1).float())
    else:
        spread_class_scores_(model)
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    return str(folder / "model.pth")


def _detectron2(cfg, weights, folder):
    """detectron2's own evaluation of `weights`: (COCO results, its metrics)."""
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    name = cfg.DATASETS.TEST[0]
    evaluator = COCOEvaluator(name, distributed=False, output_dir=str(folder / "detectron2"))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' summaries
        metrics = inference_on_dataset(model.eval(), build_detection_test_loader(cfg, name),
                                       evaluator)
    return _results(folder / "detectron2"), metrics


def _ours(cfg, weights):
    """tools/train_net.py --eval-only's evaluation of `weights`: (COCO results, metrics)."""
    cfg.MODEL.WEIGHTS = weights
    metrics = evaluate(cfg)
    return _results(Path(cfg.OUTPUT_DIR) / "inference" / cfg.DATASETS.TEST[0]), metrics


def _results(folder):
    return json.loads((folder / "coco_instances_results.json").read_text())


def _rows(results):
    """{image id: (N, 6 + 51) float64 rows of score, class, box, keypoints, best first}."""
    rows = {}
    for r in results:
        rows.setdefault(r["image_id"], []).append(
            [r["score"], r["category_id"], *r["bbox"], *r.get("keypoints", [])])
    return {k: torch.tensor(sorted(v, reverse=True), dtype=torch.float64) for k, v in rows.items()}


def _masks(results):
    """{image id: the masks, decoded, best detection first}."""
    by_image = {}
    for r in sorted(results, key=lambda r: -r["score"]):
        by_image.setdefault(r["image_id"], []).append(mask_util.decode(r["segmentation"]))
    return {k: np.stack(v) for k, v in by_image.items()}


def _same(got, expected):
    """Whether two COCO results hold the same detections (to 1e-3; masks to 0.1%)."""
    a, b = _rows(got), _rows(expected)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape or (a[k] - b[k]).abs().max() >= 1e-3
                                   for k in b):
        return False
    if expected and "segmentation" in expected[0]:
        a, b = _masks(got), _masks(expected)
        return all((a[k] != b[k]).mean() <= 1e-3 for k in b)
    return True


class Family:
    """A family's ground-truth set (its default model's detectron2 detections) and those
    detections, made once per family."""

    def __init__(self, root, pictures):
        self.root, self.pictures, self.made = root, pictures, {}

    def __call__(self, family):
        if family not in self.made:
            name, folder = f"keys_{family}", self.root / family
            folder.mkdir()
            _register(name, self.pictures, [])
            cfg = _cfg(family, ["MODEL.MASK_ON", False], name, folder)
            default, _ = _detectron2(cfg, _weights(cfg, folder, self.pictures), folder)
            _register(name, self.pictures, _ground_truth(default))
            self.made[family] = name, default
        return self.made[family]


@pytest.fixture(scope="module")
def families(tmp_path_factory, pictures):
    return Family(tmp_path_factory.mktemp("families"), pictures)


@pytest.mark.parametrize("case", CASES)
def test_evaluation_is_detectron2s(case, families, pictures, tmp_path):
    family, opts = CASES[case]
    dataset, default = families(family)
    cfg = _cfg(family, opts, dataset, tmp_path)
    weights = _weights(cfg, tmp_path, pictures)
    expected, expected_metrics = _detectron2(cfg, weights, tmp_path)
    own_key = all(k.startswith("MODEL.RESNEXT.") for k in opts[::2])
    if opts and not own_key:  # else the case would prove nothing
        assert not _same(expected, default), f"{case}: detectron2 detects the same without it"
    got, metrics = _ours(cfg, weights)
    assert _same(got, expected), case
    assert expected_metrics["bbox"]["AP"] > 1 or case != family  # the ground truth is met
    assert set(metrics) == set(expected_metrics)
    for task, values in expected_metrics.items():
        assert metrics[task]["AP"] == pytest.approx(values["AP"], abs=1e-3, nan_ok=True), task


def _matched(got, expected, confident=0.5):
    """Of `expected`'s detections scoring >= `confident` (COCO results): how many, and how
    many have a twin in `got` on their image with the same class, IoU >= 0.9 and a score
    within 0.1 (tests/engine/test_inference_dtype.py derives these bounds for bfloat16)."""
    count = twins = 0
    for e in (r for r in expected if r["score"] >= confident):
        count += 1
        same = [g for g in got if g["image_id"] == e["image_id"]
                and g["category_id"] == e["category_id"] and abs(g["score"] - e["score"]) <= 0.1]
        ious = mask_util.iou([g["bbox"] for g in same], [e["bbox"]], [0]) if same else []
        twins += bool(len(ious)) and float(np.max(ious)) >= 0.9
    return count, twins


@pytest.mark.parametrize("family", ["fpn", "retinanet"])
def test_bfloat16_evaluation_finds_detectron2s_float32_detections(family, families, pictures,
                                                                  tmp_path):
    """INFERENCE_DTYPE bfloat16 against detectron2's float32 model: not equal (bfloat16 keeps
    8 significant bits, ~60 layers add up to ~1%: scores move by a few hundredths, near-equal
    overlapping boxes may swap in NMS), so each confident detection needs a close twin, and
    the AP stays within 5 (of ~90: a tiny random model on its own detections; the contract
    on a trained model, 0.3, is benchmarks/ap_contract.py's)."""
    dataset, _ = families(family)
    cfg = _cfg(family, ["MODEL.RESNEXT.INFERENCE_DTYPE", "bfloat16"], dataset, tmp_path)
    weights = _weights(cfg, tmp_path, pictures)
    expected, expected_metrics = _detectron2(cfg, weights, tmp_path)
    got, metrics = _ours(cfg, weights)
    count, twins = _matched(got, expected)
    assert count >= 20 and twins >= 0.9 * count, (twins, count)
    assert metrics["bbox"]["AP"] == pytest.approx(expected_metrics["bbox"]["AP"], abs=5)


def _input(pictures, size=640):
    """The first picture, resized to `size` px (corners at 512-640 px, where bfloat16's step
    is 4 px), as the model takes it (BGR channels: INPUT.FORMAT "RGB" flips them back)."""
    picture = Image.open(pictures / "0.png").resize((size, size), Image.BILINEAR)
    image = torch.from_numpy(np.asarray(picture)[:, :, ::-1].copy()).permute(2, 0, 1).float()
    return [{"image": image, "height": size, "width": size}]


@pytest.mark.parametrize("family", ["fpn", "retinanet"])
def test_bfloat16_scores_are_float32_scores_of_the_logits(family, tmp_path, pictures):
    """Under INFERENCE_DTYPE bfloat16 the class logits are bfloat16; detectron2's scores of
    them (softmax; RetinaNet: sigmoid) were computed in bfloat16 too, as CPU autocast keeps
    both in the input's type: every score was a bfloat16 number, ~128 values per octave (in
    0.5-1, steps of 0.004), so detections of one image and across images tied and ranked
    by chance in COCOeval. Each score must be detectron2's float32 score of those logits."""
    cfg = _cfg(family, ["MODEL.RESNEXT.INFERENCE_DTYPE", "bfloat16", "INPUT.MIN_SIZE_TEST", 640,
                        "INPUT.MAX_SIZE_TEST", 640], "keys_fpn", tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(torch.load(_weights(cfg, tmp_path, pictures))["model"])
    predictor = model.roi_heads.box_predictor if family == "fpn" else model.head.cls_score
    logits = []  # copies: RetinaNet's inference applies sigmoid_ in place
    predictor.register_forward_hook(
        lambda m, args, out: logits.append((out[0] if family == "fpn" else out).clone()))
    with torch.no_grad():
        scores = inference_model(cfg, model.eval())(_input(pictures))[0]["instances"].scores
    if family == "fpn":  # softmax over the classes and the background
        expected = torch.softmax(logits[0].float(), dim=1)[:, :-1].flatten()
    else:
        expected = torch.cat([x.float().sigmoid().flatten() for x in logits])
    assert len(scores) >= 20
    error = (scores[:, None] - expected[None]).abs().min(1).values
    assert error.max() < 1e-6, float(error.max())


def test_bfloat16_keypoints_are_float32_keypoints_of_the_heatmaps(monkeypatch, tmp_path,
                                                                     pictures):
    """detectron2's heatmaps_to_keypoints writes the keypoints into a tensor of the
    heatmaps' type: under INFERENCE_DTYPE bfloat16 every coordinate was rounded to a
    bfloat16 number, by up to 2 px at 512-1024 px (4 px steps) and 4 px beyond, while the
    boxes keep float32's (precision.py). Each keypoint must be detectron2's float32 one
    from those heatmaps and boxes."""
    cfg = _cfg("fpn", [*KEYPOINTS, "MODEL.RESNEXT.INFERENCE_DTYPE", "bfloat16",
                       "INPUT.MIN_SIZE_TEST", 640, "INPUT.MAX_SIZE_TEST", 640,
                       "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]]],
               "keys_fpn", tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(torch.load(_weights(cfg, tmp_path, pictures))["model"])
    seen, inference = [], keypoint_head.keypoint_rcnn_inference

    def recording(heatmaps, instances):
        boxes = torch.cat([i.pred_boxes.tensor for i in instances])
        seen.append(heatmaps_to_keypoints(heatmaps.detach().float(), boxes.float()))
        return inference(heatmaps, instances)

    monkeypatch.setattr(keypoint_head, "keypoint_rcnn_inference", recording)
    with torch.no_grad():  # 640 px in, 640 px out: detector_postprocess scales by 1
        got = inference_model(cfg, model.eval())(_input(pictures))[0]["instances"]
    expected = seen[0][:, :, [0, 1, 3]]
    assert got.pred_keypoints.shape == expected.shape and got.pred_boxes.tensor.max() > 512
    assert (got.pred_keypoints - expected).abs().max() < 1e-3


def test_bfloat16_mask_probabilities_are_float32_sigmoids_of_the_logits(monkeypatch, tmp_path,
                                                                        pictures):
    """Under CPU autocast the sigmoid of bfloat16 mask logits ran in bfloat16: each mask
    probability, the value pasting thresholds at 0.5, was a bfloat16 number. Each must be
    the float32 sigmoid of the mask head's logits."""
    from detectron2.modeling.roi_heads import mask_head

    cfg = _cfg("fpn", [*MASKS, "MODEL.RESNEXT.INFERENCE_DTYPE", "bfloat16"], "keys_fpn",
               tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(torch.load(_weights(cfg, tmp_path, pictures))["model"])
    with torch.no_grad():  # detectron2's std 0.001 leaves every logit near 0 (sigmoid 0.5)
        model.roi_heads.mask_head.predictor.weight.normal_(0, 0.1)
    seen, inference = [], mask_head.mask_rcnn_inference

    def recording(logits, instances):
        inference(logits, instances)
        classes = torch.cat([i.pred_classes for i in instances])
        chosen = logits.detach().float()[torch.arange(len(classes)), classes][:, None]
        seen.append((chosen.sigmoid(), torch.cat([i.pred_masks for i in instances])))

    monkeypatch.setattr(mask_head, "mask_rcnn_inference", recording)
    with torch.no_grad():
        inference_model(cfg, model.eval())(_input(pictures, 64))
    expected, got = seen[0]
    assert len(got) > 0 and got.dtype == torch.float32
    assert (expected - 0.5).abs().max() > 1e-2  # logits away from 0: bfloat16 would round them
    assert (got - expected).abs().max() < 1e-6, float((got - expected).abs().max())
