"""Traced files of the other detector families (Mask, Keypoint, C4 and Cascade R-CNN) give
the eager model's detections and per-detection fields on pictures of other sizes than the
one traced, with another number of detections on each; the families the export cannot
take are refused, naming what to do instead; the tool's --run-eval of a Mask R-CNN in RGB
with its own PIXEL_MEAN / STD, traced on a picture of another size, scores what
detectron2's own inference scores."""
import json

import pytest
import torch
from pycocotools import mask as mask_util

from resnext_det.export import ExportedDetector, ExportError, export_model
from resnext_det.utils.testing import detection_error
from tests.export.helpers import CONFIGS, TINY, tiny_model
from tests.helpers import (assert_same_detections, detectron2_detections, load_tool,
                           pycocotools_stats)

# boxes scored below 0.15 dropped: each picture keeps another number of them (a count
# baked into the trace would show), TEST.DETECTIONS_PER_IMAGE 40 caps the rest
FEW = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.15, "TEST.DETECTIONS_PER_IMAGE", 40]
MASK = ["MODEL.MASK_ON", True, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16]
KEYPOINT = ["MODEL.KEYPOINT_ON", True, "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 5,
            "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16]]
C4 = ["MODEL.BACKBONE.NAME", "build_resnext_backbone", "MODEL.RESNETS.OUT_FEATURES", ["res4"],
      "MODEL.RPN.IN_FEATURES", ["res4"], "MODEL.ROI_HEADS.IN_FEATURES", ["res4"],
      "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64]],
      "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]]]
FAMILIES = {  # the fields each compares beside boxes, scores and classes
    "mask_rcnn": (MASK, ["pred_masks"]),
    "keypoint_rcnn": (KEYPOINT, ["pred_keypoints", "pred_keypoint_heatmaps"]),
    # the C4 heads on res5: detectron2's Res5ROIHeads (with its mask head), and ours
    "c4_mask_rcnn": (C4 + MASK + ["MODEL.ROI_HEADS.NAME", "Res5ROIHeads"], ["pred_masks"]),
    "c4_faster_rcnn": (C4 + ["MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads"], []),
    "cascade_mask_rcnn": (MASK + ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
                                  "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True],
                          ["pred_masks"]),
}
CASES = [(family, fmt) for family in FAMILIES for fmt in ("torchscript", "onnx")
         if (family, fmt) != ("keypoint_rcnn", "onnx")]  # refused: below


@pytest.fixture(scope="module")
def pictures(digits_inputs):
    """The digits inputs (64x64 twice, 64x128 asked at half size), one tall (128x64) and
    one of odd sides (61x59)."""
    a, b = digits_inputs[0]["image"], digits_inputs[1]["image"]
    return [*digits_inputs, {"image": torch.cat([a, b], dim=1)}, {"image": a[:, 3:, 5:]}]


def _assert_same_fields(got, expected, fields):
    """The file's unprocessed fields (masks as the head's 28x28 probabilities, keypoints
    and heatmaps in the image's coordinates) equal the model's, detection by detection."""
    for name in fields:
        assert got.get(name).shape == expected.get(name).shape, name
        assert torch.allclose(got.get(name), expected.get(name), rtol=1e-4, atol=1e-4), name


def _assert_same_pasted_masks(got, expected):
    """The masks pasted into the picture (bool, detector_postprocess) agree but for the
    pixels whose probability float rounding puts on the other side of 0.5."""
    assert got.pred_masks.shape == expected.pred_masks.shape
    assert (got.pred_masks != expected.pred_masks).float().mean() < 1e-3


@pytest.mark.parametrize("family, fmt", CASES)
def test_traced_family_gives_eager_detections(family, fmt, pictures, tmp_path):
    overrides, fields = FAMILIES[family]
    model = tiny_model("faster_rcnn", *overrides, *FEW)
    exported = ExportedDetector(export_model(model, pictures[0]["image"], str(tmp_path), fmt=fmt))
    counts = []
    for x in pictures:
        with torch.no_grad():
            expected = model([x])[0]["instances"]
            expected_raw = model.inference([x], do_postprocess=False)[0]
        got, got_raw = exported([x])[0]["instances"], exported.raw([x])[0]
        assert len(got) == len(expected)
        assert detection_error(got, expected) < 1e-3
        _assert_same_fields(got_raw, expected_raw, fields)
        if "pred_masks" in fields:
            _assert_same_pasted_masks(got, expected)
        if "pred_keypoints" in fields:  # scaled to the picture's height and width
            assert torch.allclose(got.pred_keypoints, expected.pred_keypoints, atol=1e-3)
        counts.append(len(expected))
    assert set(counts) != {counts[0]}, counts  # not the traced picture's count everywhere


def test_a_keypoint_head_to_onnx_is_an_export_error(pictures, tmp_path):
    """torch's ONNX exporter stopped after the whole trace on detectron2's scripted
    heatmaps_to_keypoints with a SymbolicValueError of ~400 KB (the graph), a traceback."""
    model = tiny_model("faster_rcnn", *KEYPOINT)
    with pytest.raises(ExportError, match=r"--format onnx cannot export a keypoint head "
                       r"\(MODEL\.KEYPOINT_ON True\).*--format torchscript exports this model"):
        export_model(model, pictures[0]["image"], str(tmp_path), fmt="onnx")
    assert not list(tmp_path.iterdir())


def test_a_value_onnx_cannot_translate_is_one_export_error_line(pictures, tmp_path, monkeypatch):
    """Past the refusal above, the exporter's own SymbolicValueError (any OnnxExporterError,
    not only an unsupported operator) becomes an ExportError of its first line."""
    import resnext_det.export.export as export

    monkeypatch.setattr(export, "check_onnx_exportable", lambda model: None)
    model = tiny_model("faster_rcnn", *KEYPOINT)
    with pytest.raises(ExportError, match=r"^--format onnx: Unsupported: ONNX export of operator "
                       r"aten::index.*--format torchscript exports this model\.$") as error:
        export_model(model, pictures[0]["image"], str(tmp_path), fmt="onnx")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("fmt, method", [("torchscript", "tracing"), ("onnx", "tracing"),
                                         ("torchscript", "scripting")])
def test_panoptic_fpn_is_an_export_error(fmt, method, pictures, tmp_path):
    """A PanopticFPN is a GeneralizedRCNN: it passed the check, then tracing raised a
    TypeError on its (instances, sem_seg) output, and scripting blamed the norms."""
    model = tiny_model("faster_rcnn", "MODEL.META_ARCHITECTURE", "PanopticFPN", *MASK,
                       "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32)
    with pytest.raises(ExportError, match=r"MODEL\.META_ARCHITECTURE='PanopticFPN' cannot be "
                       r"exported.*MODEL\.META_ARCHITECTURE GeneralizedRCNN with the same weights"):
        export_model(model, pictures[0]["image"], str(tmp_path), fmt=fmt, method=method)


def _segm_by_box(results):
    """{(image id, rounded box): RLE} of COCO results."""
    return {(r["image_id"], *(round(v, 2) for v in r["bbox"])): r["segmentation"] for r in results}


def test_run_eval_of_a_mask_rcnn_in_rgb_scores_as_detectron2(datasets_root, tmp_path, monkeypatch):
    """--run-eval of a Mask R-CNN read in RGB, normalized by its own PIXEL_MEAN / STD, traced
    on a picture of another size than the test set's (the default FAST_INFERENCE copy): its
    boxes, masks and box / mask AP are those of detectron2's inference_on_dataset +
    COCOEvaluator run on the eager model of the written config.yaml."""
    import cv2
    import numpy as np

    overrides = [*MASK, "INPUT.MASK_FORMAT", "bitmask", "INPUT.FORMAT", "RGB",
                 "MODEL.PIXEL_MEAN", [30.0, 120.0, 200.0], "MODEL.PIXEL_STD", [20.0, 60.0, 90.0]]
    weights = tmp_path / "model_final.pth"
    torch.save({"model": tiny_model("faster_rcnn", *overrides).state_dict()}, weights)
    sample = tmp_path / "sample.png"
    cv2.imwrite(str(sample), np.random.default_rng(0).integers(0, 255, (50, 130, 3), np.uint8))
    out = tmp_path / "export"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    tool = load_tool("export_model")
    _, results = tool.main(tool.argument_parser().parse_args([
        "--config-file", str(CONFIGS["faster_rcnn"]), "--output", str(out), "--run-eval",
        "--sample-image", str(sample), *map(str, TINY), "DATALOADER.NUM_WORKERS", "0",
        "MODEL.WEIGHTS", str(weights), *map(str, overrides)]))

    digits = datasets_root / "digits"
    gt = digits / "annotations/instances_val.json"
    got = json.loads((out / "inference/digits_val/coco_instances_results.json").read_text())
    expected = detectron2_detections(out / "config.yaml", weights, gt, digits / "images/val",
                                     tmp_path / "detectron2")
    assert_same_detections(got, expected)
    got_masks, expected_masks = _segm_by_box(got), _segm_by_box(expected)
    assert got_masks.keys() == expected_masks.keys()
    for key, rle in expected_masks.items():  # mask IoU of each detection with its eager one
        assert mask_util.iou([got_masks[key]], [rle], [0])[0, 0] > 0.99, key
    for iou_type in ("bbox", "segm"):
        scored = pycocotools_stats(gt, expected, iou_type)
        assert {k: results[iou_type][k] for k in scored} == pytest.approx(scored, nan_ok=True)
