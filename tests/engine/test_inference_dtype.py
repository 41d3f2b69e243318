"""MODEL.RESNEXT.INFERENCE_DTYPE: evaluation and prediction under bfloat16 autocast.

The reference is the float32 model itself (detectron2's build_model, called directly):
the bfloat16 copy must find the same boxes, hand back float32 outputs, and really compute
in bfloat16 (a forward hook inside the backbone sees the activations' type), through the
call sites users reach: Trainer.test (tools/train_net.py) and BatchPredictor
(tools/predict.py). The AP contract on a trained model is benchmarks/ap_contract.py's.
"""
import json
from argparse import Namespace

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import pairwise_iou

from resnext_det.config import ConfigError
from resnext_det.config.checks import check_resnext_keys
from resnext_det.data import register_digits
from resnext_det.engine import Trainer, setup_cfg
from resnext_det.engine.precision import AutocastInference
from resnext_det.engine.predict import BatchPredictor
from resnext_det.engine.trainer import inference_model
from resnext_det.utils.testing import max_rel_error, randomize_norms_
from tests.helpers import captured, make_cfg, pycocotools_stats
from tests.tools.test_predict import save_model, spread_class_scores_, tiny_cfg

NAMES = ("dtype_digits_train", "dtype_digits_val")
CONFIDENT = 0.5  # float32 detections held to a bfloat16 twin: far from the 0.05 threshold


def _model():
    """A tiny random Faster R-CNN FPN whose classes score as a trained model's do."""
    torch.manual_seed(0)
    cfg = tiny_cfg("TEST.DETECTIONS_PER_IMAGE", 1000)  # no cut at 100 that rounding may move
    return spread_class_scores_(randomize_norms_(build_model(cfg))).eval()


def _inputs(count=4):
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, 64, 64), generator=gen).float(),
             "height": 64, "width": 64} for _ in range(count)]


def _dtype_cfg(dtype, *opts):
    return tiny_cfg("MODEL.RESNEXT.INFERENCE_DTYPE", dtype, "TEST.DETECTIONS_PER_IMAGE", 1000, *opts)


def _record_dtypes(model):
    """The output types of a grouped 3x3 convolution inside the backbone, call by call."""
    dtypes = []
    model.backbone.bottom_up.res3[0].conv2.register_forward_hook(
        lambda module, args, output: dtypes.append(output.dtype))
    return dtypes


def _matched(expected, got):
    """Of `expected`'s detections scoring >= CONFIDENT: how many, and how many have a twin
    in `got` of the same class, IoU >= 0.9 and score within 0.1.

    Why these bounds: bfloat16 keeps 8 significant bits, so every value is rounded by up
    to 2^-9 (0.2%) and ~60 layers add such errors up to about 1%. A box corner moves by
    well under a pixel (IoU >= 0.9 leaves 1 px for a 20 px box); the class logits of the
    tiny model have std 2 (spread_class_scores_), so 1% moves a logit by ~0.2 and a score
    near 0.5 by ~0.05: 0.1 leaves twice that. A twin may be missing where NMS had two
    near-equal overlapping boxes (the untrained model has many) and rounding swapped their
    order, so a fraction is held, not all.
    """
    keep = expected.scores >= CONFIDENT
    expected = expected[keep]
    same_class = expected.pred_classes[:, None] == got.pred_classes[None]
    close = ((pairwise_iou(expected.pred_boxes, got.pred_boxes) >= 0.9) & same_class
             & ((expected.scores[:, None] - got.scores[None]).abs() <= 0.1))
    return len(expected), int(close.any(1).sum())


def test_bfloat16_finds_the_float32_boxes_and_returns_float32():
    model = _model()
    with torch.no_grad():
        expected = model(_inputs())
        got = inference_model(_dtype_cfg("bfloat16"), model)(_inputs())
    total = matched = 0
    for e, g in zip(expected, got):
        g = g["instances"]
        assert g.pred_boxes.tensor.dtype == g.scores.dtype == torch.float32
        assert g.pred_classes.dtype == torch.int64
        count, twins = _matched(e["instances"], g)
        total, matched = total + count, matched + twins
    # 441 of 445 here (the 4: NMS swaps); 95% leaves room for other CPUs' kernels, while a
    # wrong computation (a dropped cast, float16's range, a broken output) loses far more.
    assert total >= 100 and matched >= 0.95 * total, (matched, total)


@pytest.mark.parametrize("fast", ["", "fold+nhwc"])
def test_roi_pooling_stays_float32(fast):
    """detectron2's ROIAlign casts the boxes to the features' type: in bfloat16 a corner at
    200-256 px is rounded to 1 px. Under INFERENCE_DTYPE the box pooler's output must be
    detectron2's own ROIPooler run in float32 (no autocast) on the same features and boxes,
    for detectron2's pooler (FAST_INFERENCE "") and the sparse one of the fast copy."""
    model = _model()
    seen = []
    model.roi_heads.box_pooler.register_forward_hook(
        lambda module, args, output: seen.append((args, output)))
    gen = torch.Generator().manual_seed(1)
    image = {"image": torch.randint(0, 256, (3, 256, 256), generator=gen).float(),
             "height": 256, "width": 256}
    with torch.no_grad():
        inference_model(_dtype_cfg("bfloat16", "MODEL.RESNEXT.FAST_INFERENCE", fast), model)([image])
        (features, boxes), output = seen[0]
        assert boxes[0].tensor.max() > 128  # corners where bfloat16's step is >= 0.5 px
        expected = ROIPooler.forward(model.roi_heads.box_pooler, [f.float() for f in features], boxes)
    assert output.dtype == torch.float32
    assert max_rel_error(output, expected) < 1e-6


def test_evaluation_computes_in_bfloat16(datasets_root, tmp_path):
    """Trainer.test (tools/train_net.py --eval-only, the EvalHook) on the bfloat16 copy:
    the backbone computes in bfloat16, the evaluator and its json work unchanged."""
    register_digits(datasets_root / "digits", names=NAMES)
    model = _model()
    dtypes = _record_dtypes(model)
    for dtype, expected in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        cfg = _dtype_cfg(dtype, "DATASETS.TEST", (NAMES[1],), "OUTPUT_DIR", str(tmp_path / dtype),
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.IMS_PER_BATCH", 1)
        dtypes.clear()
        results = Trainer.test(cfg, model)
        assert dtypes == [expected] * 4, dtype  # 4 val images, one forward each
        written = json.loads((tmp_path / dtype / "inference" / NAMES[1]
                              / "coco_instances_results.json").read_text())
        assert written and all(isinstance(r["score"], float) for r in written)
        expected = pycocotools_stats(MetadataCatalog.get(NAMES[1]).json_file, written)
        assert results["bbox"]["AP"] == pytest.approx(expected["AP"], abs=1e-4), dtype
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model is untouched


def test_prediction_computes_in_bfloat16(tmp_path):
    """BatchPredictor (tools/predict.py) in bfloat16 against detectron2's float32 model."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    pictures = [x["image"].permute(1, 2, 0).byte().numpy() for x in _inputs(2)]  # as BGR
    float32 = BatchPredictor.from_config(_dtype_cfg("float32", "MODEL.WEIGHTS", weights))
    bfloat16 = BatchPredictor.from_config(_dtype_cfg("bfloat16", "MODEL.WEIGHTS", weights))
    dtypes = _record_dtypes(bfloat16.model.model)
    expected, got = float32(pictures), bfloat16(pictures)
    assert dtypes == [torch.bfloat16]
    for e, g in zip(expected, got):
        g = g["instances"]
        assert g.scores.dtype == g.pred_boxes.tensor.dtype == torch.float32
        count, twins = _matched(e["instances"], g)
        assert count > 0 and twins >= 0.9 * count, (twins, count)


def test_export_stays_float32_and_says_so(tmp_path):
    """tools/export_model.py's model (export.main.load_model) is float32 whatever the key says."""
    from resnext_det.export.main import load_model

    weights = save_model(tmp_path / "tiny.pth", 10)
    cfg = _dtype_cfg("bfloat16", "MODEL.WEIGHTS", weights, "DATASETS.TEST", "()")
    with captured("resnext_det.engine.precision") as logged:
        exported = load_model(cfg)
    assert not isinstance(exported, AutocastInference)
    assert isinstance(inference_model(cfg, exported), AutocastInference)  # where it would be
    assert any("INFERENCE_DTYPE='bfloat16'" in m and "float32" in m for m in logged)


@pytest.mark.parametrize("value, message", [
    ("float16", r"INFERENCE_DTYPE='float16' is not valid: expected 'bfloat16' or 'float32' with "
                r"MODEL.DEVICE='cpu'. float16 inference needs CUDA"),
    ("half", r"INFERENCE_DTYPE='half' is not valid: expected one of \['float32', 'bfloat16', "
             r"'float16'\]"),
])
def test_bad_dtypes_are_config_errors(value, message):
    cfg = make_cfg("MODEL.RESNEXT.INFERENCE_DTYPE", value)
    with pytest.raises(ConfigError, match=message):
        check_resnext_keys(cfg)  # when a tool starts
    with pytest.raises(ConfigError, match=message):
        inference_model(cfg, build_model(make_cfg("MODEL.RESNEXT.TEMPLATE", "X50_2x2d")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_float16_is_checked_after_the_cpu_fallback(tmp_path):
    """MODEL.DEVICE cuda on a machine without CUDA falls back to the CPU (setup_cfg):
    float16 is refused then, not at the first evaluation after training."""
    args = Namespace(config_file="", opts=["MODEL.DEVICE", "cuda", "OUTPUT_DIR", str(tmp_path),
                                           "MODEL.RESNEXT.INFERENCE_DTYPE", "float16"])
    with pytest.raises(ConfigError, match=r"'float16' .* MODEL.DEVICE='cpu'"):
        setup_cfg(args, task="other")


def test_lazy_configs_name_train_inference_dtype(tmp_path):
    from resnext_det.engine.lazy import LazySetup
    from resnext_det.engine.lazy_config import load_lazy_config
    from tests.engine.test_lazy import DIGITS

    cfg = load_lazy_config(DIGITS, [f"train.output_dir={tmp_path}", "+train.inference_dtype=float16"])
    with pytest.raises(ConfigError, match=r"train.inference_dtype='float16' is not valid: expected "
                                          r"'bfloat16' or 'float32' with train.device='cpu'"):
        LazySetup(cfg)
