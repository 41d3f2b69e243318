"""Training keys: resnext_det's Trainer trains as detectron2's own DefaultTrainer (the peer).

Trainer replaces the model set-up (MODEL.RESNEXT.FAST_TRAINING: frozen norms inside the
convolutions, channels_last; ROI_ALIGN "sparse"), the train loader (data checks, bad
boxes and images), the step loop, the checkpointer and the hooks. For each training key
set away from its default, a tiny model trains 2 steps once under Trainer and once under
DefaultTrainer, from one seed, on one config: the same initial weights, the same losses
at every step and the same weight changes (to float rounding). Each key must change the
peer's own training (else its case proves nothing): computed, not assumed. Trainer runs
twice: with every fast path on (FAST_TRAINING "auto", ROI_ALIGN "sparse") and with none
("", "torchvision": detectron2's modules, only Trainer's engine).
"""
import contextlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from resnext_det import add_resnext_config
from resnext_det.data import DigitsSpec, build_digits_dataset
from resnext_det.engine import Trainer
from resnext_det.utils.testing import max_rel_error, randomize_norms_
from tests.helpers import register_coco_file, weight_changes

ROOT = Path(__file__).resolve().parents[2]
FPN = "configs/demo/faster_rcnn_X50_digits.yaml"  # BN norms from scratch, ROI_ALIGN sparse
MASK = "configs/demo/mask_rcnn_X50_digits.yaml"
C4 = "configs/Base-RCNN-C4-ResNeXt.yaml"  # FrozenBN, ResNeXtRes5ROIHeads
RETINANET = "configs/Base-RetinaNet-ResNeXt.yaml"
TINY = [  # tests/engine/test_train_net.py's tiny model, 64 px images, 2 steps
    # (the first at 0.001 x BASE_LR: WARMUP_FACTOR)
    "MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 16, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 8,
    "MODEL.ROI_HEADS.NUM_CLASSES", 10, "MODEL.RETINANET.NUM_CLASSES", 10,
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[8], [16], [32], [64], [128]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]",
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1,
    "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", 100, "TEST.EVAL_PERIOD", 0,
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", 64, "DATALOADER.NUM_WORKERS", 0,
    "DATASETS.TRAIN", "('keys_train',)", "DATASETS.TEST", "()", "SEED", 0,
    # Every anchor and every proposal trains: no sampling, top-k or NMS, which a float
    # rounding (NHWC kernels, the sparse ROIAlign) can tip. With detectron2's sampling, a
    # 1e-7 change of near-tied scores picked other regions: after 3 steps the weights
    # differed by up to 2e-2 (relative) and loss_cls by 2e-3, in detectron2 itself between
    # 1 and 2 threads too (measured).
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 4096, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 4096,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 4096, "MODEL.RPN.NMS_THRESH", 1.0,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 4096,
]
# Weight changes, relative (max_rel_error), measured on an AVX-512 CPU, 1 thread: with no
# fast path 2e-10 (RetinaNet; 0, bit for bit, elsewhere); with "auto" ("fold+nhwc" there;
# "fold" on AVX2) and the sparse ROIAlign up to 4e-5 (CLIP_VALUE 0.01, which rounding tips
# for a few gradients), the losses to 2e-7. Each key's own effect: 4e-3 or more.
TOLERANCE = 2e-4
FAST = {"auto": ["MODEL.RESNEXT.FAST_TRAINING", "auto", "MODEL.RESNEXT.ROI_ALIGN", "sparse"],
        "": ["MODEL.RESNEXT.FAST_TRAINING", "", "MODEL.RESNEXT.ROI_ALIGN", "torchvision"]}
# (ZERO_INIT_RESIDUAL needs trainable norms; the demo's BN models keep it: without it their
# float32 gradients were ill-conditioned, NCHW's off float64's by 5e-4 and NHWC's by 1.4e-3)
FROZEN = ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNEXT.ZERO_INIT_RESIDUAL", False]
FIVE_CLASS_WEIGHTS = "five_class_weights"  # replaced by the file the digits fixture writes


def _case(keys, base=FPN, setting=(), peer_raises=None):
    """A case: `keys` (KEY, VALUE, ...) set on `base` + `setting` (what the peer's default
    run also has); `peer_raises`: the error detectron2 ends its run with, after the last
    step (its weights are then the trained ones)."""
    name = " ".join(str(k) for k in keys[::2]) or base
    return pytest.param(base, tuple(setting), tuple(keys), peer_raises, id=f"{Path(base).stem}:"
                        f"{name}")


CASES = [
    _case(FROZEN + ["MODEL.BACKBONE.FREEZE_AT", 3]),  # frozen norms inside the convolutions
    _case(["MODEL.BACKBONE.FREEZE_AT", 2]),  # the frozen stages' BNs become FrozenBN
    _case(["MODEL.RESNETS.STRIDE_IN_1X1", True]),
    _case(["MODEL.FPN.NORM", "GN", "MODEL.FPN.FUSE_TYPE", "avg"],
          setting=["MODEL.FPN.OUT_CHANNELS", 32]),  # GN's 32 groups
    _case(["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, False, True, True]",
           "MODEL.RESNETS.DEFORM_MODULATED", True]),
    _case(["MODEL.RPN.BBOX_REG_LOSS_TYPE", "giou", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE",
           "ciou"]),
    _case(["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign",  # aligned=False, in the sparse path
           "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2]),
    _case(["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool"]),  # the sparse pooler steps aside
    _case(["MODEL.ROI_BOX_HEAD.NUM_CONV", 1, "MODEL.ROI_BOX_HEAD.NORM", "GN"],
          setting=["MODEL.ROI_BOX_HEAD.CONV_DIM", 32]),
    _case(["MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.3]",
           "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True]),
    _case(["SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.BASE_LR_END", 0.005,
           "SOLVER.WARMUP_METHOD", "constant"]),
    # fvcore's StepParamScheduler indexes past its values at the end: detectron2's run
    # stops there (after the last step, before model_final.pth)
    _case(["SOLVER.LR_SCHEDULER_NAME", "WarmupStepWithFixedGammaLR", "SOLVER.NUM_DECAYS", 1],
          peer_raises=IndexError),
    _case(["SOLVER.NESTEROV", True, "SOLVER.BIAS_LR_FACTOR", 2.0,
           "SOLVER.WEIGHT_DECAY_NORM", 0.1, "SOLVER.WEIGHT_DECAY_BIAS", 0.0,
           "SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
           "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.1]),
    _case(["SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value",
           "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.01]),
    # numpy's RNG, drawn in the loader (SEED 0 flipped none of the 4 images)
    _case(["INPUT.RANDOM_FLIP", "horizontal"], setting=["SEED", 2]),
    _case(["INPUT.RANDOM_FLIP", "vertical", "INPUT.MIN_SIZE_TRAIN", "(48, 64)"],
          setting=["SEED", 2]),
    _case(["INPUT.CROP.ENABLED", True, "INPUT.CROP.SIZE", "[0.8, 0.8]",
           "INPUT.MIN_SIZE_TRAIN", "(40, 64)", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range"]),
    _case(["INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[100.0, 110.0, 120.0]",
           "MODEL.PIXEL_STD", "[50.0, 60.0, 70.0]"]),
    _case(["DATALOADER.FILTER_EMPTY_ANNOTATIONS", False],
          setting=["DATASETS.TRAIN", "('keys_one_empty',)"]),
    _case(["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler",
           "DATALOADER.REPEAT_THRESHOLD", 0.5]),
    _case(["TEST.PRECISE_BN.ENABLED", True, "TEST.PRECISE_BN.NUM_ITER", 2]),  # running means
    # detectron2's checkpoint of another class count (the heads are left out by shape), its
    # frozen norms random: folded, they are more than the identity of a fresh FrozenBN
    _case(["MODEL.WEIGHTS", FIVE_CLASS_WEIGHTS], setting=FROZEN),
    _case(["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign",  # the res5 head's pooler
           "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2], base=C4,
          setting=["MODEL.ANCHOR_GENERATOR.SIZES", "[[8, 16, 32, 64]]"]),  # res4 alone
    _case(["MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", 0.1, "MODEL.RETINANET.FOCAL_LOSS_GAMMA", 1.0],
          base=RETINANET),
    _case(FROZEN, base=MASK),  # the mask head's pooler, folded backbone
    _case(["MODEL.KEYPOINT_ON", True, "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 2,
           "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "[16, 16]"],  # the NCHW keypoint head
          setting=["DATASETS.TRAIN", "('keys_keypoints',)",
                   "MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE", 1]),
]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """6 digits images of 64 px as keys_train; the same with the first image's boxes gone
    (keys_one_empty) and with two keypoints per digit, its box's corners (keys_keypoints);
    detectron2's checkpoint of the FrozenBN FPN model with 5 classes, random norms."""
    root = tmp_path_factory.mktemp("keys")
    build_digits_dataset(root, DigitsSpec(num_train=6, num_val=1, image_size=64,
                                          digit_sizes=(12, 24), max_digits=2), 0)
    annotations, images = root / "annotations", root / "images/train"
    register_coco_file("keys_train", annotations / "instances_train.json", images)
    data = json.loads((annotations / "instances_train.json").read_text())
    first = data["images"][0]["id"]
    empty = dict(data, annotations=[a for a in data["annotations"] if a["image_id"] != first])
    (annotations / "one_empty.json").write_text(json.dumps(empty))
    register_coco_file("keys_one_empty", annotations / "one_empty.json", images)
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        a["keypoints"], a["num_keypoints"] = [x + 1, y + 1, 2, x + w - 1, y + h - 1, 2], 2
    for c in data["categories"]:
        c["keypoints"], c["skeleton"] = ["top_left", "bottom_right"], []
    (annotations / "keypoints.json").write_text(json.dumps(data))
    register_coco_file("keys_keypoints", annotations / "keypoints.json", images)
    MetadataCatalog.get("keys_keypoints").set(keypoint_names=["top_left", "bottom_right"],
                                              keypoint_flip_map=[("top_left", "bottom_right")])
    seed_all_rng(1)
    model = build_model(_cfg(FPN, [*FROZEN, "MODEL.ROI_HEADS.NUM_CLASSES", 5], root))
    torch.save({"model": randomize_norms_(model).state_dict()}, root / "five_classes.pth")
    return root


def _cfg(base, keys, out):
    cfg = add_resnext_config(get_cfg())
    cfg.merge_from_file(str(ROOT / base))
    cfg.merge_from_list([k if isinstance(k, str) else str(k) for k in [*TINY, *keys]])
    cfg.MODEL.DEVICE, cfg.OUTPUT_DIR = "cpu", str(out)
    return cfg


def _train(trainer_class, base, keys, root, raises=None):
    """(weights at the start, weights at the end, {loss name: (steps,) tensor}) of a run of
    `trainer_class` in this process, seeded as detectron2's default_setup does."""
    keys = [str(root / "five_classes.pth") if k == FIVE_CLASS_WEIGHTS else k for k in keys]
    out = root / "runs" / trainer_class.__name__
    shutil.rmtree(out, ignore_errors=True)  # Trainer refuses an earlier run's folder
    cfg = _cfg(base, keys, out)
    seed_all_rng(cfg.SEED)
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=False)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(raises) if raises else contextlib.nullcontext():
        trainer.train()
    end = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = {k: torch.tensor([v for v, _ in h.values()])
              for k, h in trainer.storage.histories().items() if k.startswith(("loss", "total"))}
    return start, end, losses


_peer_runs = {}


def _peer(base, keys, root, raises=None):
    """detectron2's DefaultTrainer on `keys`, once per module."""
    if (base, keys) not in _peer_runs:
        _peer_runs[base, keys] = _train(DefaultTrainer, base, keys, root, raises)
    return _peer_runs[base, keys]


def _same_layout(a, b):
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("fast", FAST)
@pytest.mark.parametrize("base, setting, keys, peer_raises", CASES)
def test_a_key_trains_as_in_detectron2s_default_trainer(digits, base, setting, keys,
                                                        peer_raises, fast):
    start, end, losses = _peer(base, setting + keys, digits, peer_raises)
    default_start, default_end, _ = _peer(base, setting, digits)
    changes = weight_changes(end, start)
    # the key changes detectron2's training: other parameters, start or weight changes
    effect = (math.inf if not _same_layout(start, default_start) else max(
        max_rel_error(start, default_start),
        max_rel_error(changes, weight_changes(default_end, default_start))))
    assert effect > 10 * TOLERANCE
    ours_start, ours_end, ours_losses = _train(Trainer, base, [*setting, *keys, *FAST[fast]],
                                               digits)
    assert _same_layout(ours_start, start)
    assert all(torch.equal(ours_start[k], start[k]) for k in start)  # one seed, one model
    error = max_rel_error(weight_changes(ours_end, ours_start), changes)
    assert error < TOLERANCE
    assert ours_losses.keys() == losses.keys()
    loss_error = max_rel_error(ours_losses, losses)
    assert loss_error < 1e-5
