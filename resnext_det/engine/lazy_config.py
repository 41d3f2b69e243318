"""Python configs (detectron2's LazyConfig) for tools/train_net.py: load, override, check.

A .py config is loaded and overridden as detectron2's tools/lazyconfig_train_net.py does
(`LazyConfig.load`, then `key=value` overrides in hydra's grammar), with two changes:
an override must name a key that exists (or an argument its call takes; `+key=value`
adds a new one), where detectron2 silently adds a misspelt key; and every error is one
ConfigError naming the key. The checks of the YAML path run on a yacs view of the config
(`yacs_view`): one implementation, with the lazy keys put back into each message
(`renamed`, LAZY_KEYS).
"""
import difflib
import inspect
import os

import torch
from detectron2.config import LazyConfig, get_cfg
from detectron2.evaluation import COCOEvaluator
from detectron2.solver import get_default_optimizer_params
from detectron2.utils import comm
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config.checks import (ConfigFileError, check_folder_can_be_made, check_output_dir,
                             check_resnext_keys, check_seed, check_sgd_number)
from ..config.defaults import add_resnext_config
from ..config.errors import ConfigError, check_bool, check_whole
from ..errors import UserError
from ..modeling.config_args import check_fpn_dilation
from ..modeling.lazy import ResNeXt, arg_names, check_resnext_args, renamed
from .checks import bad_data_policies

# The yacs keys (and phrases) of our checks' messages -> the keys of a lazy config.
LAZY_KEYS = {
    "OUTPUT_DIR": "train.output_dir",
    "MODEL.WEIGHTS ''": 'train.init_checkpoint=""',
    "MODEL.WEIGHTS": "train.init_checkpoint",
    "DATASETS.TRAIN": "dataloader.train.dataset.names",
    "DATASETS.TEST": "dataloader.test.dataset.names",
    "DATALOADER.ON_BAD_BOX skip": "dataloader.on_bad_box=skip",
    "DATALOADER.ON_BAD_BOX": "dataloader.on_bad_box",
    "DATALOADER.ON_BAD_IMAGE skip": "dataloader.on_bad_image=skip",
    "DATALOADER.ON_BAD_IMAGE": "dataloader.on_bad_image",
    "MODEL.ROI_HEADS.NUM_CLASSES": "model.roi_heads.num_classes",
    "MODEL.RETINANET.NUM_CLASSES": "model.num_classes",
    "MODEL.PIXEL_MEAN": "model.pixel_mean",
    "MODEL.PIXEL_STD": "model.pixel_std",
    "INPUT.FORMAT": "dataloader.train.mapper.image_format",
    "MODEL.RESNEXT.FAST_INFERENCE": "train.fast_inference",
    "MODEL.RESNEXT.FAST_TRAINING": "train.fast_training",
    "MODEL.RESNEXT.INFERENCE_DTYPE": "train.inference_dtype",
    "MODEL.RESNEXT.ROI_ALIGN": "train.roi_align",
    "SOLVER.AMP.ENABLED": "train.amp.enabled",
    "SOLVER.BASE_LR": "optimizer.lr",
    "SOLVER.MOMENTUM": "optimizer.momentum",
    "SOLVER.NESTEROV": "optimizer.nesterov",
    "SOLVER.WEIGHT_DECAY": "optimizer.weight_decay",
    # get_default_optimizer_params' arguments: they set each parameter group's weight decay / lr
    "SOLVER.WEIGHT_DECAY_NORM": "optimizer.params.weight_decay_norm",
    "SOLVER.WEIGHT_DECAY_BIAS": "optimizer.params.weight_decay_bias",
    "SOLVER.BIAS_LR_FACTOR": "optimizer.params.bias_lr_factor",
    "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size",
    "TEST.COCO_EVAL_BACKEND": "dataloader.evaluator.backend",
    "MODEL.DEVICE": "train.device",
}


# train.weights.<key>: ResNeXtCheckpointer's arguments (MODEL.RESNEXT.WEIGHTS_ALLOW_PARTIAL,
# WEIGHTS_TRUST_PICKLE of the YAML configs).
WEIGHTS_OPTIONS = ("allow_partial", "trust_pickle")

# get_detection_dataset_dicts' switch of its class-name check (engine.checks.check_same_classes)
CHECK_CONSISTENCY = "dataloader.train.dataset.check_consistency"


# ---------------------------------------------------------------- load and override
def load_lazy_config(config_file, opts=()):
    """LazyConfig.load(config_file), then the `key=value` overrides `opts`, checked."""
    if not os.path.isfile(config_file):
        raise ConfigFileError(f"--config-file {config_file!r}: no such file. The Python "
                              "configs are under configs/lazy/ (e.g. "
                              "configs/lazy/faster_rcnn_X50_digits.py).")
    try:
        cfg = LazyConfig.load(config_file)
    except Exception as e:  # the file is Python: any error in it (RESNEXT_DET_DEBUG=1: traceback)
        raise ConfigFileError(f"--config-file {config_file!r} cannot be loaded: "
                              f"{type(e).__name__}: {e}") from e
    for override in opts:
        apply_override(cfg, override)
    return cfg


def _split(override):
    """'+a.b=1' -> ('a.b', '1', True): key, value text, whether it may add a new key."""
    if "=" not in override:
        raise ConfigError(override, None, "key=value (a Python config's override)",
                          "e.g. train.max_iter=1000; YAML configs take KEY VALUE pairs.")
    key, value = override.split("=", 1)
    return key.lstrip("+~"), value, key.startswith("+")


def target_of(node):
    """The callable a LazyCall node's _target_ names (located when it is a string)."""
    target = node.get("_target_")
    return locate(target) if isinstance(target, str) else target


def _accepts(call, name):
    """Whether a LazyCall node's target takes keyword `name` (True when it cannot be told)."""
    target = target_of(call)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _known_names(node):
    names = [k for k in node.keys() if k != "_target_"]
    if "_target_" in node:
        target = target_of(node)
        try:
            names += [p for p in inspect.signature(target).parameters if p not in names]
        except (TypeError, ValueError):
            pass
    return names


def check_override_key(cfg, key, value, may_add=False):
    """`key` names an existing key of `cfg`, or an argument that its LazyCall node takes.

    Raises a ConfigError naming the key, the keys there and the closest one.
    """
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the config"
        if isinstance(node, ListConfig):
            if not (part.isdigit() and int(part) < len(node)):
                raise ConfigError(key, value, f"an index 0..{len(node) - 1} of the list {where}")
            node = node[int(part)]
        elif isinstance(node, DictConfig):
            if part not in node:
                last = i == len(parts) - 1
                if last and (may_add or ("_target_" in node and _accepts(node, part))):
                    return
                known = _known_names(node)
                close = difflib.get_close_matches(part, known, n=1)
                hint = f"Did you mean {'.'.join(parts[:i] + close)}? " if close else ""
                raise ConfigError(key, value, f"an existing key: {where} has {known}",
                                  hint + f"A new key needs a leading '+': +{key}=...")
            node = node[part]
        else:
            raise ConfigError(key, value, f"a key of a config, but {where} is "
                              f"{node!r} ({type(node).__name__})")


def _check_type(key, old, new):
    """A number stays a number, a whole number a whole number and a bool a bool (a typo would
    surface hours later)."""
    if isinstance(old, bool) and not isinstance(new, bool):
        raise ConfigError(key, new, "True or False")
    if isinstance(old, (int, float)) and not isinstance(old, bool) and isinstance(new, str):
        raise ConfigError(key, new, f"a number (it is {old!r})")
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(new, float):
        raise ConfigError(key, new, f"a whole number (it is {old!r})")


def apply_override(cfg, override):
    """One `key=value` (hydra's grammar, as detectron2's LazyConfig.apply_overrides reads it)."""
    key, value, may_add = _split(override)
    check_override_key(cfg, key, value, may_add)
    old = OmegaConf.select(cfg, key)  # dotted, list indices as numbers; None if not there
    try:
        LazyConfig.apply_overrides(cfg, [override])
    except Exception as e:  # hydra's parse errors, OmegaConf's, detectron2's KeyError and
        # NotImplementedError (deletion)
        message = " ".join(str(e).split()).split(" See https://hydra")[0]
        raise ConfigError(key, value, "key=value in hydra's override grammar (e.g. 3, 0.1, "
                          "abc, [1,2], null)", f"{type(e).__name__}: {message}") from None
    _check_type(key, old, OmegaConf.select(cfg, key))


# ---------------------------------------------------------------- the yacs view
def resnext_nodes(cfg, path=""):
    """[(path, node)] of every L(ResNeXt) call in `cfg`, e.g. ("model.backbone.bottom_up", ...)."""
    found = []
    if isinstance(cfg, DictConfig):
        target = cfg.get("_target_") if "_target_" in cfg else None
        if target is ResNeXt or target == f"{ResNeXt.__module__}.{ResNeXt.__name__}":
            found.append((path, cfg))
        items = [(k, cfg[k]) for k in cfg.keys() if k != "_target_"]
    elif isinstance(cfg, ListConfig):
        items = [(str(i), v) for i, v in enumerate(cfg)]
    else:
        return found
    for key, value in items:
        found += resnext_nodes(value, f"{path}.{key}" if path else key)
    return found


def _node(cfg, *keys):
    """cfg[k1][k2]... of `keys`, each a config node, else an empty one (so that .get works)."""
    for key in keys:
        value = cfg.get(key) if isinstance(cfg, DictConfig) else None
        cfg = value if isinstance(value, DictConfig) else DictConfig({})
    return cfg


def _names(node):
    names = node.get("names")
    return (names,) if isinstance(names, str) else tuple(names or ())


def _num_classes(model):
    """(META_ARCHITECTURE, NUM_CLASSES key, value) of a lazy model, for the class-count check."""
    heads = model.get("roi_heads")
    if isinstance(heads, DictConfig) and "num_classes" in heads:
        return "GeneralizedRCNN", "ROI_HEADS", heads.num_classes
    if "num_classes" in model:
        return "RetinaNet", "RETINANET", model.num_classes
    return "ProposalNetwork", None, None


def yacs_view(cfg):
    """A yacs config holding what our YAML-path checks read, taken from lazy `cfg`.

    ResNeXt's arguments (the first L(ResNeXt) node), pixel statistics and input format,
    the datasets, the training set's loading options, the bad-data policies, the class
    count, init_checkpoint and output_dir. Returns (view, names): names maps the view's
    keys to the lazy keys, for `renamed`.
    """
    names = dict(LAZY_KEYS)
    nodes = resnext_nodes(cfg.get("model"))
    if nodes:
        path, node = nodes[0]
        args = {k: node[k] for k in node.keys() if k not in ("_target_", "in_channels")}
        view = check_resnext_args(f"model.{path}.", **args)
        names.update(arg_names(f"model.{path}."))
    else:
        view = add_resnext_config(get_cfg())
    train, data, model = cfg.train, _node(cfg, "dataloader"), _node(cfg, "model")
    view.OUTPUT_DIR = train.output_dir
    view.MODEL.DEVICE = str(train.device)
    view.SOLVER.AMP.ENABLED = train.amp.get("enabled", False)
    optimizer = _node(cfg, "optimizer")  # what a resumed run must keep (checks.solver_settings)
    for key in ("BASE_LR", "MOMENTUM", "NESTEROV", "WEIGHT_DECAY"):  # None where not set
        view.SOLVER[key] = optimizer.get(LAZY_KEYS[f"SOLVER.{key}"].split(".")[1])
    params = _node(optimizer, "params")  # torch puts back each group's, as the optimizer's
    defaults = inspect.signature(get_default_optimizer_params).parameters
    for key in ("WEIGHT_DECAY_NORM", "WEIGHT_DECAY_BIAS", "BIAS_LR_FACTOR"):
        lazy = LAZY_KEYS[f"SOLVER.{key}"].split(".")[2]
        view.SOLVER[key] = params.get(lazy, defaults[lazy].default)
    view.SOLVER.IMS_PER_BATCH = _node(data, "train").get("total_batch_size")
    # detectron2's own configs lack these: their models run as detectron2 runs them
    for key, default in (("FAST_INFERENCE", ""), ("FAST_TRAINING", ""),
                         ("INFERENCE_DTYPE", "float32"), ("ROI_ALIGN", "torchvision")):
        view.MODEL.RESNEXT[key] = train.get(key.lower(), default)  # train.fast_inference, ...
    view.MODEL.WEIGHTS = train.get("init_checkpoint", "") or ""
    for key, lazy in (("PIXEL_MEAN", "pixel_mean"), ("PIXEL_STD", "pixel_std")):
        if lazy in model:
            view.MODEL[key] = list(model[lazy])
    train_data = _node(data, "train", "dataset")
    view.DATASETS.TRAIN = _names(train_data)
    view.DATASETS.TEST = _names(_node(data, "test", "dataset"))
    view.DATALOADER.FILTER_EMPTY_ANNOTATIONS = bool(train_data.get("filter_empty", True))
    min_keypoints = train_data.get("min_keypoints", 0) or 0
    view.MODEL.KEYPOINT_ON = min_keypoints > 0
    view.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = min_keypoints
    proposal_files = train_data.get("proposal_files")
    view.MODEL.LOAD_PROPOSALS = bool(proposal_files)
    view.DATASETS.PROPOSAL_FILES_TRAIN = tuple(proposal_files or ())
    view.DATALOADER.ON_BAD_BOX = data.get("on_bad_box", "skip")
    view.DATALOADER.ON_BAD_IMAGE = data.get("on_bad_image", "error")
    view.INPUT.FORMAT = _node(data, "train", "mapper").get("image_format", view.INPUT.FORMAT)
    view.TEST.COCO_EVAL_BACKEND = _node(data, "evaluator").get("backend", None)
    arch, node, num_classes = _num_classes(model)
    view.MODEL.META_ARCHITECTURE = arch
    if node:
        view.MODEL[node].NUM_CLASSES = num_classes
    return view, names


# ---------------------------------------------------------------- checks and fallbacks
def device_fallback(cfg):
    """train.device 'cuda...' on a machine without CUDA -> 'cpu'; returns a note or None.

    The config's required keys are checked first (`require`).
    """
    require(cfg, REQUIRED)
    require(cfg.train, REQUIRED_TRAIN_KEYS, prefix="train.")
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
        return "No CUDA device here: train.device set to 'cpu'."
    return None


# What tools/train_net.py reads: top-level objects, and the keys of `train` it needs.
REQUIRED = ("model", "dataloader", "train")
REQUIRED_TO_TRAIN = ("optimizer", "lr_multiplier")
REQUIRED_TRAIN_KEYS = ("output_dir", "device", "init_checkpoint", "max_iter", "amp",
                       "checkpointer", "eval_period", "log_period")


def require(cfg, keys, prefix=""):
    """Each of `keys` is in `cfg`; else a ConfigError naming prefix + key."""
    for key in keys:
        if key not in cfg:
            raise ConfigError(prefix + key, None, "a value in the config", "A Python config "
                              "for tools/train_net.py defines model, dataloader, train and, to "
                              "train, optimizer and lr_multiplier, as detectron2's "
                              "configs/common/ do (train: configs/common/train.py's keys).")


def check_train_numbers(cfg):
    """train.max_iter, checkpointer.period, log_period >= 1, eval_period >= 0, train.seed,
    the optimizer's lr, momentum and weight_decay (and a bias_lr_factor with the base_lr it
    scales), lr_multiplier.warmup_factor, a training dataset named, and
    dataloader.train.total_batch_size a multiple of the process count, where given."""
    train = cfg.train
    for key, low in (("max_iter", 1), ("eval_period", 0), ("log_period", 1)):
        check_whole(f"train.{key}", train[key], low)
    check_seed(train.get("seed", -1), "train.seed")
    if "period" in train.checkpointer:
        check_whole("train.checkpointer.period", train.checkpointer.period, 1)
    if train.checkpointer.get("max_to_keep") is not None:  # fvcore asserts > 0
        check_whole("train.checkpointer.max_to_keep", train.checkpointer.max_to_keep, 1,
                    " (or None: keep all)")
    test_batch = _node(cfg, "dataloader", "test").get("batch_size")
    if test_batch is not None:  # torch's ValueError at the evaluation after the training
        check_whole("dataloader.test.batch_size", test_batch, 1)
    optimizer, warmup = _node(cfg, "optimizer"), _node(cfg, "lr_multiplier").get("warmup_factor")
    for key in ("lr", "momentum", "weight_decay"):
        if optimizer.get(key) is not None:  # torch's optimizer: a bare ValueError
            check_sgd_number(f"optimizer.{key}", optimizer[key], key)
    if warmup is not None:
        check_sgd_number("lr_multiplier.warmup_factor", warmup, "warmup_factor")
    params = _node(optimizer, "params")  # get_default_optimizer_params: a bare ValueError
    if params.get("bias_lr_factor", 1.0) not in (None, 1.0) and params.get("base_lr") is None:
        raise ConfigError("optimizer.params.bias_lr_factor", params.bias_lr_factor, "1.0 without "
                          "optimizer.params.base_lr", "Biases train at base_lr x bias_lr_factor: "
                          'set optimizer.params.base_lr (the optimizer\'s lr: "${..lr}").')
    train_set = _node(cfg, "dataloader", "train", "dataset")
    if "names" in train_set and not _names(train_set):  # detectron2: a bare assert
        raise ConfigError("dataloader.train.dataset.names", train_set.names, "at least one "
                          "registered dataset, e.g. ['coco_2017_train']")
    batch = _node(cfg, "dataloader", "train").get("total_batch_size")
    if batch is not None:
        check_whole("dataloader.train.total_batch_size", batch, 1)
        if batch % comm.get_world_size():
            raise ConfigError("dataloader.train.total_batch_size", batch, "a multiple of the "
                              f"number of processes ({comm.get_world_size()})")


def check_evaluated_set(evaluator):
    """A COCOEvaluator's dataset_name (dataloader.evaluator) is one name: it scores one set,
    and configs/lazy/common/coco.py also puts the name in its output_dir. A list (e.g. of
    one, through dataloader.test.dataset.names) was a KeyError at the first evaluation,
    after the training."""
    target = target_of(evaluator)
    name = evaluator.get("dataset_name")
    coco = isinstance(target, type) and issubclass(target, COCOEvaluator)
    if not coco or isinstance(name, str):
        return
    value = list(name) if isinstance(name, ListConfig) else name
    raise ConfigError("dataloader.evaluator.dataset_name", value, "one dataset name (a "
                      "string: detectron2's COCOEvaluator scores one set)", "configs/lazy/common/"
                      "coco.py takes it from dataloader.test.dataset.names: give that one name, "
                      "e.g. dataloader.test.dataset.names=digits_val.")


def check_fpn_bottom_ups(model):
    """Each L(ResNeXt) that is an FPN's bottom_up fits it (check_fpn_dilation), before the
    model is built."""
    for path, node in resnext_nodes(model):
        keys = path.split(".")
        parent = _node(model, *keys[:-1])
        if keys[-1] == "bottom_up" and "in_features" in parent:
            check_fpn_dilation(f"model.{path}.res5_dilation", node.get("res5_dilation", 1),
                               list(parent.in_features))


def check_lazy_config(cfg):
    """Everything that can be checked before a model or dataset is built; returns yacs_view's
    (view, names). Errors name the lazy key (e.g. model.backbone.bottom_up.norm)."""
    train = cfg.train
    check_train_numbers(cfg)
    for key, value in train.get("weights", {}).items():
        if key not in WEIGHTS_OPTIONS:
            raise ConfigError(f"train.weights.{key}", value,
                              f"one of the keys {list(WEIGHTS_OPTIONS)}")
        check_bool(f"train.weights.{key}", value)
    train_set = _node(cfg, "dataloader", "train", "dataset")
    if train_set.get("check_consistency") is not None:
        check_bool(CHECK_CONSISTENCY, train_set.check_consistency)
    view, names = yacs_view(cfg)
    check_fpn_bottom_ups(_node(cfg, "model"))
    check_evaluated_set(_node(cfg, "dataloader", "evaluator"))
    evaluations = _node(cfg, "dataloader", "evaluator").get("output_dir")
    if isinstance(evaluations, str) and evaluations:  # was: a traceback after the training
        check_folder_can_be_made("dataloader.evaluator.output_dir", evaluations)
    try:
        check_resnext_keys(view)  # fast_inference, fast_training, roi_align, amp with the device, backend
        bad_data_policies(view)
        check_output_dir(view)
    except UserError as e:
        raise renamed(e, names) from None
    return view, names
