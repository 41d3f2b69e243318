"""Tiny detectors with random weights that output boxes (Faster R-CNN FPN, RetinaNet)."""
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import resnext_det
from resnext_det.utils.testing import randomize_norms_

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "faster_rcnn": ROOT / "configs/demo/faster_rcnn_X50_digits.yaml",  # FPN, BN
    "retinanet": ROOT / "configs/Base-RetinaNet-ResNeXt.yaml",  # FrozenBN
}
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNEXT.TEMPLATE", "X50_2x2d",
    "MODEL.RESNEXT.ZERO_INIT_RESIDUAL", False,
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "MODEL.RETINANET.NUM_CLASSES", 10,
    "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128,
    # an untrained detector: keep every box, so that 100 per image come out
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0,
]


def tiny_cfg(arch, *overrides):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS[arch]))
    cfg.merge_from_list(TINY + list(overrides))
    return cfg


def _spread_scores_(model, seed):
    """Classifier layers with MSRA-scaled random weights: an untrained head (std 0.01
    weights) scores every box about alike, at its prior, and near-ties would let float
    rounding reorder them."""
    if hasattr(model, "head"):  # RetinaNet: the 4-conv tower and the classifier
        layers = [m for m in model.head.cls_subnet if isinstance(m, torch.nn.Conv2d)]
        layers.append(model.head.cls_score)
    else:  # a cascade has one box predictor per stage
        predictors = model.roi_heads.box_predictor
        predictors = predictors if isinstance(predictors, torch.nn.ModuleList) else [predictors]
        layers = [model.proposal_generator.rpn_head.objectness_logits]
        layers += [predictor.cls_score for predictor in predictors]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
    return model


def tiny_model(arch, *overrides, seed=0):
    """A random tiny detector in eval mode, with random norm statistics (so folding counts)."""
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(arch, *overrides))
    return _spread_scores_(randomize_norms_(model, seed=seed), seed).eval()
