"""Checks run when a tool starts, before anything is built or trained.

Every MODEL.RESNEXT key is checked here, so that a typo stops the run in its first second
rather than at the first evaluation after hours of training; the builders check the
keys again where they read them. OUTPUT_DIR must be a folder we can write.
"""
import logging
import math
import os
import re

import torch
import yaml
from detectron2 import modeling as m
from detectron2.modeling import roi_heads as r
from detectron2.utils import comm

from ..checkpoint.metadata import valid_pixel_stats
from ..evaluation.coco import BACKENDS as COCO_EVAL_BACKENDS
from ..modeling.backbone import output_features
from ..modeling.config_args import check_features_produced, resnext_block_args, resnext_node
from ..modeling.roi_align import ROI_ALIGN_IMPLS
from ..modeling.train_fold import TRAIN_FAST_MODES
from ..errors import UserError
from .errors import (ConfigError, check_bool, check_choice, check_number, check_whole, is_int,
                     is_whole)
from .evaluation_checks import check_evaluated_keypoints, check_test_keys
from .sampler_checks import check_sampler_keys

logger = logging.getLogger(__name__)

# What yacs / detectron2 raise for a bad YAML file or override: an unknown key and an odd
# override list are AssertionErrors, a wrong type a ValueError or TypeError, a missing
# _BASE_ file an OSError, a file that is not a mapping an AttributeError.
_MERGE_ERRORS = (yaml.YAMLError, AssertionError, ValueError, KeyError, TypeError)
_FILE_ERRORS = _MERGE_ERRORS + (OSError, AttributeError)


class ConfigFileError(UserError, ValueError):
    """A config file or command-line override that detectron2's config cannot merge."""


def merge_config(cfg, config_file, opts):
    """cfg.merge_from_file(config_file) then merge_from_list(opts), with errors that say which.

    Args:
        cfg (CfgNode): the config to merge into (unfrozen).
        config_file (str): a YAML file ("" or None: none).
        opts (list[str]): KEY VALUE pairs from the command line.
    """
    if config_file:
        if not os.path.isfile(config_file):
            what = "a folder, not a file" if os.path.isdir(config_file) else "no such file"
            raise ConfigFileError(f"--config-file {config_file!r}: {what}. The configs "
                                  "are under configs/ (e.g. configs/faster_rcnn_X50_32x4d.yaml).")
        try:
            cfg.merge_from_file(config_file)
        except OSError as e:  # the file itself was found: a _BASE_ it names is not
            raise ConfigFileError(f"--config-file {config_file!r}: {e.strerror}: {e.filename!r}, "
                                  "which its _BASE_ (or a _BASE_'s _BASE_) names, relative to "
                                  "the file that names it.") from None
        except RecursionError:
            raise ConfigFileError(f"--config-file {config_file!r}: its _BASE_ chain loops (a "
                                  "file names itself, or a file that names it, as _BASE_).") from None
        except _FILE_ERRORS as e:
            not_mapping = isinstance(e, AttributeError) or "NoneType" in str(e)  # empty: None
            found = _first_not_a_mapping(config_file) if not_mapping else None
            what = _one_line(e)
            if found:  # which file of the chain, not yacs' "argument of type 'NoneType' ..."
                where = "the file" if found[0] == config_file else f"its _BASE_ {found[0]!r}"
                what = f"{where} is {found[1]}"
            hint = " A config file is a YAML mapping of KEY: value (e.g. MODEL: ...)." if not_mapping else ""
            fix = _int_for_float_fix(str(e))
            hint = f" {fix}" if fix else hint
            raise ConfigFileError(f"--config-file {config_file!r}: {what}.{hint}") from None
    try:
        cfg.merge_from_list(list(opts))
    except _MERGE_ERRORS as e:
        options = [o for o in opts if str(o).startswith("--")]
        hint = (f" Options ({', '.join(options)}) go before them." if options else "")
        fix = _int_for_float_fix(str(e)) or ("They are KEY VALUE pairs of existing keys, "
                                             "e.g. SOLVER.MAX_ITER 1000.")
        raise ConfigFileError(f"command-line overrides: {_one_line(e)}. {fix}{hint}") from None


# yacs' message for a value of another type than the key's default: it turns no int into a
# float, so `SOLVER.MOMENTUM 0` (or `MOMENTUM: 0` in a file) is refused, `0.0` taken
_TYPE_MISMATCH = re.compile(r"Type mismatch \(<class 'float'> vs\. <class 'int'>\) with values "
                            r"\(.* vs\. (-?\d+)\) for config key: (\S+)")


def _int_for_float_fix(message):
    """How to give a whole number to a key that holds a float, or None for other errors."""
    found = _TYPE_MISMATCH.search(message)
    if not found:
        return None
    value, key = found.groups()
    return f"{key} holds a decimal number: write {value} as {value}.0."


def _first_not_a_mapping(path, seen=()):
    """(file, what it holds) of the first file in `path`'s _BASE_ chain, `path` first, that
    is not a YAML mapping (yacs' TypeError said only "argument of type 'NoneType' ..."), or
    None. _BASE_ is relative to the file that names it, as in detectron2."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return path, "empty" if data is None else f"a YAML {type(data).__name__}, not a mapping"
    base = data.get("_BASE_")
    if not isinstance(base, str) or path in seen:
        return None
    if not base.startswith(("~", "/", "http://", "https://")):
        base = os.path.join(os.path.dirname(path), base)
    return _first_not_a_mapping(os.path.expanduser(base), seen + (path,))


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__

FAST_INFERENCE_MODES = ("", "fold", "fold+nhwc")
_BOOLEANS = ("ZERO_INIT_RESIDUAL", "CONFIG_FROM_WEIGHTS", "WEIGHTS_ALLOW_PARTIAL",
             "WEIGHTS_TRUST_PICKLE")


def amp_device_type(cfg):
    """None with SOLVER.AMP.ENABLED off; else "cuda" or "cpu", where mixed precision runs."""
    if not cfg.get("SOLVER", {}).get("AMP", {}).get("ENABLED", False):
        return None
    device_type = cfg.MODEL.DEVICE.split(":")[0]
    if device_type not in ("cuda", "cpu"):
        raise ConfigError("SOLVER.AMP.ENABLED", True, f"False with MODEL.DEVICE={cfg.MODEL.DEVICE!r}",
                          "Mixed precision training runs on 'cuda' (float16, detectron2's "
                          "AMPTrainer) or 'cpu' (bfloat16 autocast).")
    return device_type


INFERENCE_DTYPES = ("float32", "bfloat16", "float16")


def inference_dtype(cfg):
    """MODEL.RESNEXT.INFERENCE_DTYPE, checked with MODEL.DEVICE: float16 needs CUDA."""
    name, device = resnext_node(cfg).get("INFERENCE_DTYPE", "float32"), cfg.MODEL.DEVICE
    check_choice("MODEL.RESNEXT.INFERENCE_DTYPE", name, INFERENCE_DTYPES)
    device_type = device.split(":")[0]
    if name == "float16" and device_type != "cuda":
        raise ConfigError("MODEL.RESNEXT.INFERENCE_DTYPE", name, f"'bfloat16' or 'float32' with "
                          f"MODEL.DEVICE={device!r}", "float16 inference needs CUDA: CPUs emulate it "
                          "(slower than float32), and its 5-bit exponent overflows above 65504 "
                          "where bfloat16 keeps float32's range.")
    if name != "float32" and device_type not in ("cuda", "cpu"):
        raise ConfigError("MODEL.RESNEXT.INFERENCE_DTYPE", name, f"'float32' with MODEL.DEVICE="
                          f"{device!r}", "Lower precision inference runs on 'cuda' or 'cpu'.")
    return name


def resnext_choice(cfg, key, allowed):
    """The value of MODEL.RESNEXT.<key> (e.g. "FAST_TRAINING"), checked to be one of `allowed`."""
    return check_choice(f"MODEL.RESNEXT.{key}", resnext_node(cfg)[key], allowed)


def fast_inference_mode(cfg):
    """FAST_INFERENCE: "" (the model as trained), "fold" or "fold+nhwc"."""
    return resnext_choice(cfg, "FAST_INFERENCE", FAST_INFERENCE_MODES)


def fast_training_mode(cfg):
    """FAST_TRAINING, for train_fold.prepare_for_training."""
    return resnext_choice(cfg, "FAST_TRAINING", TRAIN_FAST_MODES)


def roi_align_impl(cfg):
    """ROI_ALIGN, for roi_align.use_roi_align."""
    return resnext_choice(cfg, "ROI_ALIGN", ROI_ALIGN_IMPLS)


def _check_pixel_stats(cfg):
    """MODEL.PIXEL_MEAN / PIXEL_STD: one finite number per input channel, stds > 0 (the model
    divides by them: a 0 trained to a FloatingPointError, a short list to a shape error)."""
    channels = 1 if cfg.get("INPUT", {}).get("FORMAT") == "L" else 3
    for key, positive in (("PIXEL_MEAN", False), ("PIXEL_STD", True)):
        values = cfg.MODEL.get(key)
        if values is not None and not valid_pixel_stats(list(values), channels, positive):
            raise ConfigError(f"MODEL.{key}", list(values), f"{channels} finite numbers"
                              f"{' > 0' if positive else ''}, one per channel of INPUT.FORMAT")


def check_resnext_keys(cfg):
    """Every MODEL.RESNEXT value (and the RESNETS keys it combines with),
    TEST.COCO_EVAL_BACKEND, TEST.KEYPOINT_OKS_SIGMAS, TEST.AUG, TEST.EXPECTED_RESULTS, and
    SOLVER.AMP.ENABLED and INFERENCE_DTYPE with MODEL.DEVICE are valid."""
    node = resnext_node(cfg)
    for key in _BOOLEANS:
        check_bool(f"MODEL.RESNEXT.{key}", node[key])
    fast_inference_mode(cfg)
    fast_training_mode(cfg)
    roi_align_impl(cfg)
    amp_device_type(cfg)
    inference_dtype(cfg)
    backend = cfg.get("TEST", {}).get("COCO_EVAL_BACKEND")
    if backend is not None:
        check_choice("TEST.COCO_EVAL_BACKEND", backend, COCO_EVAL_BACKENDS)
    check_whole("TEST.IMS_PER_BATCH", cfg.get("TEST", {}).get("IMS_PER_BATCH", 1), 1)
    check_test_keys(cfg)
    check_whole("DATALOADER.NUM_WORKERS", cfg.get("DATALOADER", {}).get("NUM_WORKERS", 0), 0,
                " (0: load in the main process)")
    _check_pixel_stats(cfg)
    if "MIN_SIZE_TEST" in cfg.get("INPUT", {}):  # detection's (pretraining has TEST_CROP)
        check_test_sizes(cfg.INPUT)
    _check_registered_names(cfg.MODEL)
    _check_head_features(cfg.MODEL)
    _check_head_widths(cfg.MODEL)
    _check_anchors(cfg)
    backbone, heads = cfg.MODEL.get("BACKBONE"), cfg.MODEL.get("ROI_HEADS")
    if (backbone and "resnext" in backbone.NAME) or (heads and "ResNeXt" in heads.NAME):
        resnext_block_args(cfg)  # template, block form, norm and their combinations


def _registered_names(model):
    """(key, name, registry) of the MODEL names detectron2 builds through a registry."""
    meta = model.get("META_ARCHITECTURE")
    rcnn = meta in ("GeneralizedRCNN", "ProposalNetwork", "PanopticFPN")
    node = lambda name: model.get(name, {})  # noqa: E731
    found = [("META_ARCHITECTURE", meta, m.META_ARCH_REGISTRY),
             ("BACKBONE.NAME", node("BACKBONE").get("NAME"), m.BACKBONE_REGISTRY),
             ("ANCHOR_GENERATOR.NAME", node("ANCHOR_GENERATOR").get("NAME"),
              m.ANCHOR_GENERATOR_REGISTRY)]
    if rcnn:
        proposals = node("PROPOSAL_GENERATOR").get("NAME")
        found += [("PROPOSAL_GENERATOR.NAME", proposals, m.PROPOSAL_GENERATOR_REGISTRY),
                  ("RPN.HEAD_NAME", node("RPN").get("HEAD_NAME") if proposals == "RPN" else None,
                   m.RPN_HEAD_REGISTRY)]
    if meta in ("GeneralizedRCNN", "PanopticFPN"):
        found += [("ROI_HEADS.NAME", node("ROI_HEADS").get("NAME"), m.ROI_HEADS_REGISTRY),
                  ("ROI_BOX_HEAD.NAME", node("ROI_BOX_HEAD").get("NAME"), r.ROI_BOX_HEAD_REGISTRY),
                  ("ROI_MASK_HEAD.NAME", model.get("MASK_ON") and node("ROI_MASK_HEAD").get(
                      "NAME"), r.ROI_MASK_HEAD_REGISTRY),
                  ("ROI_KEYPOINT_HEAD.NAME", model.get("KEYPOINT_ON") and node(
                      "ROI_KEYPOINT_HEAD").get("NAME"), r.ROI_KEYPOINT_HEAD_REGISTRY)]
    return [(f"MODEL.{key}", name, registry) for key, name, registry in found if name]


def _check_registered_names(model):
    """Each MODEL name a registry builds is registered (detectron2: a KeyError, raised while
    the model is built, after the datasets are loaded)."""
    for key, name, registry in _registered_names(model):
        if name not in registry:
            raise ConfigError(key, name, f"one of {sorted(n for n, _ in registry)}", "A name "
                              f"of detectron2's {registry._name} registry: the module that "
                              "registers it must be imported before the model is built.")


def check_seed(seed, key="SEED"):
    """SEED (train.seed in a .py config): default_setup seeds numpy with SEED + rank, which
    takes a number < 2**32 (numpy's bare ValueError, in each process); < 0: random."""
    top = 2**32 - comm.get_world_size()
    if not is_int(seed) or seed > top:
        raise ConfigError(key, seed, f"a whole number <= {top} (process k of "
                          f"{comm.get_world_size()} seeds SEED + k, below 2**32), or < 0 for a "
                          "random one")


def _anchor_head(model):
    """The MODEL node of the head that takes the anchors."""
    return "RETINANET" if model.get("META_ARCHITECTURE") == "RetinaNet" else "RPN"


def _check_anchors(cfg):
    """MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS: one list for all features, or one per
    feature of the head that takes them (detectron2 asserts when the model is built)."""
    anchors, name = cfg.MODEL.get("ANCHOR_GENERATOR"), _anchor_head(cfg.MODEL)
    head = cfg.MODEL.get(name)
    if anchors is None or head is None or "IN_FEATURES" not in head:
        return
    key = f"MODEL.{name}.IN_FEATURES"
    for name in ("SIZES", "ASPECT_RATIOS"):
        value = anchors.get(name)
        if value is not None and len(value) not in (1, len(head.IN_FEATURES)):
            raise ConfigError(f"MODEL.ANCHOR_GENERATOR.{name}", value, f"one list for all "
                              f"features, or one per feature of {key} "
                              f"({len(head.IN_FEATURES)}: {list(head.IN_FEATURES)})")


# detectron2's C4 ROI head and ours: res5 runs on the one feature map its pooler reads
RES5_ROI_HEADS = ("Res5ROIHeads", "ResNeXtRes5ROIHeads")


def _check_head_widths(model):
    """The layers detectron2 builds for the heads: an FPN of 0 channels stopped the first
    iteration on torch's RuntimeError; a box head of FC_DIM 0 trained a predictor of biases
    only, without a word; a box head of no layer, or a res5 ROI head on several features
    (FPN's), stopped the model's build on detectron2's bare assert."""
    if "fpn" in str(model.get("BACKBONE", {}).get("NAME", "")).lower() and "OUT_CHANNELS" in \
            model.get("FPN", {}):
        check_whole("MODEL.FPN.OUT_CHANNELS", model.FPN.OUT_CHANNELS, 1)
    heads = model.get("ROI_HEADS")
    if model.get("META_ARCHITECTURE") not in ("GeneralizedRCNN", "PanopticFPN") or not heads:
        return
    if heads.get("NAME") in RES5_ROI_HEADS:
        if "IN_FEATURES" in heads and len(heads.IN_FEATURES) != 1:
            raise ConfigError("MODEL.ROI_HEADS.IN_FEATURES", list(heads.IN_FEATURES), "one "
                              f"feature with MODEL.ROI_HEADS.NAME {heads.NAME!r} (res5 runs on "
                              "it, as in the C4 configs: ['res4'])", "For an FPN backbone use "
                              "StandardROIHeads, as configs/Base-RCNN-FPN-ResNeXt.yaml does.")
        return  # res5 is its box head: ROI_BOX_HEAD is not built
    box = model.get("ROI_BOX_HEAD")
    if not box or box.get("NAME") != "FastRCNNConvFCHead" or not all(
            key in box for key in ("NUM_CONV", "NUM_FC", "CONV_DIM", "FC_DIM")):
        return
    num_conv = check_whole("MODEL.ROI_BOX_HEAD.NUM_CONV", box.NUM_CONV, 0)
    num_fc = check_whole("MODEL.ROI_BOX_HEAD.NUM_FC", box.NUM_FC, 0)
    if num_conv + num_fc == 0:
        raise ConfigError("MODEL.ROI_BOX_HEAD.NUM_FC", num_fc, "at least 1 with "
                          "MODEL.ROI_BOX_HEAD.NUM_CONV 0 (the box head needs a layer)")
    for key, count in (("CONV_DIM", num_conv), ("FC_DIM", num_fc)):
        if count:
            check_whole(f"MODEL.ROI_BOX_HEAD.{key}", box[key], 1, " (channels)")


def _check_head_features(model):
    """The heads' IN_FEATURES are among the backbone's outputs (detectron2: a KeyError
    naming only the feature, raised while the model is built)."""
    produced = output_features(model)
    if produced is None:
        return
    anchor_head, meta = _anchor_head(model), model.get("META_ARCHITECTURE")
    heads = [anchor_head] if anchor_head == "RETINANET" or model.get(
        "PROPOSAL_GENERATOR", {}).get("NAME") == "RPN" else []
    if meta == "GeneralizedRCNN":
        heads.append("ROI_HEADS")
    producer = f"MODEL.BACKBONE.NAME {model.BACKBONE.NAME!r}"
    fix = ("name only those" + ("" if model.BACKBONE.NAME == "build_resnext_backbone" else
                                ", or change MODEL.FPN.IN_FEATURES (res<k> gives p<k>)"))
    for head in heads:
        if "IN_FEATURES" in model.get(head, {}):
            check_features_produced(f"MODEL.{head}.IN_FEATURES", list(model[head].IN_FEATURES),
                                    produced, producer, fix)


def check_output_dir(cfg):
    """OUTPUT_DIR is a folder that exists or can be made, and we can write in it."""
    path = cfg.OUTPUT_DIR
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("OUTPUT_DIR", path, "a folder", "A file has that name; choose another "
                          "OUTPUT_DIR or move the file.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError("OUTPUT_DIR", path, "a folder that can be created",
                          f"Creating it failed: {e.strerror}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError("OUTPUT_DIR", path, "a folder you can write in",
                          "Choose another OUTPUT_DIR or fix its permissions.")


def check_folder_can_be_made(key, path):
    """`path` is a folder, or can be made as one by this user (checked, not made)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(key, path, "a folder that can be created", f"{existing!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(key, path, "a folder you can write in", f"{existing!r} is not "
                          "writable: choose another folder or fix its permissions.")


def check_device(cfg):
    """MODEL.DEVICE is a device torch knows ("cpu", "cuda", "cuda:1", ...)."""
    try:
        torch.device(cfg.MODEL.DEVICE)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError("MODEL.DEVICE", cfg.MODEL.DEVICE, "a torch device, e.g. 'cuda', "
                          "'cuda:1' or 'cpu'") from None


# detectron2/solver/build.py build_lr_scheduler, detectron2/data/build.py build_detection_train_loader,
# detectron2/data/detection_utils.py convert_PIL_to_numpy
LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")
TRAIN_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler",
                  "WeightedTrainingSampler", "WeightedCategoryTrainingSampler")
INPUT_FORMATS = ("BGR", "RGB", "YUV-BT.601", "L")
CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")  # detectron2's RandomCrop
CLIP_TYPES = ("value", "norm")  # detectron2's GradientClipType
WARMUP_METHODS = ("linear", "constant")  # detectron2's LRMultiplier warm-up
SIZE_SAMPLINGS = ("choice", "range")  # ResizeShortestEdge's sample_style
FLIPS = ("none", "horizontal", "vertical")  # detectron2's build_augmentation


def check_training_keys(cfg, world_size=1):
    """The detectron2 keys a detection training run reads, checked before anything is built:
    detectron2 would stop on them later (a ZeroDivisionError at the first checkpoint, an
    assert in the loader, a ValueError from the scheduler) or after an iteration."""
    s = cfg.SOLVER
    check_whole("SOLVER.MAX_ITER", s.MAX_ITER, 1)
    check_whole("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, 1, " (iterations)")
    check_whole("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, 0, " (iterations; 0: at the end only)")
    check_whole("SOLVER.WARMUP_ITERS", s.WARMUP_ITERS, 0)
    check_whole("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, 1)
    if s.IMS_PER_BATCH % world_size:
        raise ConfigError("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, f"a multiple of the number "
                          f"of processes ({world_size}): it is the batch of all of them")
    steps = list(s.STEPS)
    if not all(is_whole(v, 1) for v in steps) or steps != sorted(set(steps)):
        raise ConfigError("SOLVER.STEPS", steps, "increasing iterations >= 1, e.g. (60000, 80000)")
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR" and s.MAX_ITER in steps:
        # detectron2 drops steps > MAX_ITER (a warning); fvcore's scheduler raises on one =
        raise ConfigError("SOLVER.STEPS", steps, f"iterations below SOLVER.MAX_ITER "
                          f"({s.MAX_ITER}): a step at the last iteration would never be used")
    check_choice("SOLVER.LR_SCHEDULER_NAME", s.LR_SCHEDULER_NAME, LR_SCHEDULERS)
    check_choice("DATALOADER.SAMPLER_TRAIN", cfg.DATALOADER.SAMPLER_TRAIN, TRAIN_SAMPLERS)
    check_choice("INPUT.FORMAT", cfg.INPUT.FORMAT, INPUT_FORMATS)
    if not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN", list(cfg.DATASETS.TRAIN), "at least one registered "
                          "dataset to train on", "e.g. DATASETS.TRAIN \"('coco_2017_train',)\"")
    check_sampler_keys(cfg)
    if cfg.DATASETS.TEST:  # evaluated at the end
        check_evaluated_keypoints(cfg)
    check_input_sizes(cfg.INPUT)
    if cfg.INPUT.CROP.ENABLED:  # detectron2: a bare assert in the loader
        check_choice("INPUT.CROP.TYPE", cfg.INPUT.CROP.TYPE, CROP_TYPES)
    if s.CLIP_GRADIENTS.ENABLED:  # detectron2: a ValueError when the optimizer is built
        check_choice("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", s.CLIP_GRADIENTS.CLIP_TYPE, CLIP_TYPES)
    check_optimizer_numbers(s)
    _check_detection_schedule(s)
    _check_matchers(cfg.MODEL)


# SGD's numbers and their bounds (low, high, meaning), one table for the yacs SOLVER keys
# and the .py configs' optimizer / lr_multiplier (engine/lazy_config.check_train_numbers)
SGD_BOUNDS = {
    "lr": (1e-300, math.inf, "> 0"),
    "momentum": (0, 1, ">= 0 and < 1"),
    "weight_decay": (0, math.inf, ">= 0"),
    "warmup_factor": (0, math.nextafter(1, 2), ">= 0 and <= 1 (the warmup's first LR, as a "
                      "fraction of the LR)"),  # < 0 trains by gradient ascent in the warmup
}
_SOLVER_SGD_KEYS = {"BASE_LR": "lr", "MOMENTUM": "momentum", "WEIGHT_DECAY": "weight_decay",
                    "WARMUP_FACTOR": "warmup_factor"}


def check_sgd_number(key, value, bound):
    """`value` of config key `key` within SGD_BOUNDS[bound]."""
    low, high, meaning = SGD_BOUNDS[bound]
    check_number(key, value, low, high, meaning)


def check_optimizer_numbers(s):
    """SOLVER's SGD and schedule numbers, detection's and pretraining's alike (torch builds
    the optimizer after the model; the schedule uses the others mid-run)."""
    for key, bound in _SOLVER_SGD_KEYS.items():
        check_sgd_number(f"SOLVER.{key}", s[key], bound)
    check_number("SOLVER.GAMMA", s.GAMMA, 1e-300, meaning="> 0 (the LR factor at each step)")
    if s.NESTEROV and s.MOMENTUM == 0:
        raise ConfigError("SOLVER.NESTEROV", True, "False with SOLVER.MOMENTUM 0",
                          "Nesterov momentum needs a momentum (e.g. SOLVER.MOMENTUM 0.9).")


def _check_detection_schedule(s):
    """detectron2's own SOLVER keys (build_lr_scheduler, auto_scale_workers)."""
    check_choice("SOLVER.WARMUP_METHOD", s.WARMUP_METHOD, WARMUP_METHODS)
    if s.LR_SCHEDULER_NAME == "WarmupStepWithFixedGammaLR":
        check_whole("SOLVER.NUM_DECAYS", s.NUM_DECAYS, 1)
    check_whole("SOLVER.REFERENCE_WORLD_SIZE", s.REFERENCE_WORLD_SIZE, 0, " (0: off)")
    if s.REFERENCE_WORLD_SIZE and s.IMS_PER_BATCH % s.REFERENCE_WORLD_SIZE:
        raise ConfigError("SOLVER.REFERENCE_WORLD_SIZE", s.REFERENCE_WORLD_SIZE, "0 or a "
                          f"divisor of SOLVER.IMS_PER_BATCH ({s.IMS_PER_BATCH})")


def _check_matchers(model):
    """RPN and ROI_HEADS IOU_THRESHOLDS / IOU_LABELS as detectron2's Matcher asserts them:
    non-decreasing thresholds in (0, 1], one label more, each -1, 0 or 1."""
    for head in ("RPN", "ROI_HEADS"):
        thresholds, labels = list(model[head].IOU_THRESHOLDS), list(model[head].IOU_LABELS)
        if thresholds != sorted(thresholds) or not all(0 < t <= 1 for t in thresholds):
            raise ConfigError(f"MODEL.{head}.IOU_THRESHOLDS", thresholds,
                              "increasing IoUs > 0 and <= 1, e.g. [0.3, 0.7]")
        check_whole(f"MODEL.{head}.BATCH_SIZE_PER_IMAGE", model[head].BATCH_SIZE_PER_IMAGE, 1,
                    " (sampled anchors / regions per image; 0 made an infinite loss)")
        if len(labels) != len(thresholds) + 1 or not set(labels) <= {-1, 0, 1}:
            raise ConfigError(f"MODEL.{head}.IOU_LABELS", labels, f"{len(thresholds) + 1} labels "
                              f"(one more than IOU_THRESHOLDS), each -1 (ignore), 0 or 1")


def check_input_sizes(inp):
    """INPUT's resize sizes (detectron2's ResizeShortestEdge: a ValueError at the first image,
    for MAX_SIZE_TEST at the evaluation after the training). MIN_SIZE_TEST 0: no test resize,
    as detectron2 documents it."""
    sizes = list(inp.MIN_SIZE_TRAIN) if isinstance(inp.MIN_SIZE_TRAIN, (list, tuple)) \
        else [inp.MIN_SIZE_TRAIN]
    if not sizes or not all(is_whole(v, 1) for v in sizes):
        raise ConfigError("INPUT.MIN_SIZE_TRAIN", inp.MIN_SIZE_TRAIN, "whole numbers of pixels "
                          ">= 1, e.g. (640, 672, 704, 736, 768, 800)")
    check_whole("INPUT.MAX_SIZE_TRAIN", inp.MAX_SIZE_TRAIN, 1, " (pixels)")
    check_choice("INPUT.MIN_SIZE_TRAIN_SAMPLING", inp.MIN_SIZE_TRAIN_SAMPLING, SIZE_SAMPLINGS)
    if inp.MIN_SIZE_TRAIN_SAMPLING == "range" and len(sizes) != 2:
        raise ConfigError("INPUT.MIN_SIZE_TRAIN", inp.MIN_SIZE_TRAIN, "2 sizes (the range's ends) "
                          "with INPUT.MIN_SIZE_TRAIN_SAMPLING 'range'")
    check_choice("INPUT.RANDOM_FLIP", inp.RANDOM_FLIP, FLIPS)
    check_test_sizes(inp)


def check_test_sizes(inp):
    """INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, which every tool that runs the model reads
    (predict blamed each picture: "too thin" at MIN_SIZE_TEST -5). 0: no test resize."""
    check_whole("INPUT.MIN_SIZE_TEST", inp.MIN_SIZE_TEST, 0, " (pixels; 0: no test resize)")
    check_whole("INPUT.MAX_SIZE_TEST", inp.MAX_SIZE_TEST, 1, " (pixels)")
