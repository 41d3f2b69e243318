"""Checks that turn a missing dataset or weights file, or bad training data, into one clear
error (or a logged skip) before training."""
import functools
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.build import (filter_images_with_few_keypoints,
                                   filter_images_with_only_crowd_annotations)
from detectron2.utils import comm

from ..config.errors import ConfigError, check_choice
from ..data.checks import (BAD_BOX_POLICIES, BAD_IMAGE_POLICIES, DatasetError, check_boxes,
                           check_category_ids, check_image_files, check_stored_classes,
                           classes_difference, warn_unscorable_boxes)
from ..evaluation.lvis import lvis_unusable
from ..utils.io import LOCK_NAME, lock_folder

_COCO_HELP = (
    "Put COCO under $DETECTRON2_DATASETS/coco (DETECTRON2_DATASETS={root}), laid out as in "
    "detectron2's datasets/README.md: coco/train2014, coco/val2014, coco/train2017, "
    "coco/val2017 and coco/annotations/instances_*.json; the 2014 minival and "
    "valminusminival json files are Detectron's splits (instances_minival2014.json, "
    "instances_valminusminival2014.json).")
_DIGITS_HELP = ("Build it with: python tools/build_digits_dataset.py (or `make demo`), "
                "which writes $DETECTRON2_DATASETS/digits, and register it with "
                "resnext_det.data.register_digits() (tools/train_net.py does when the config "
                "names it).")


def _how_to_get(name):
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    if name.startswith("coco"):
        return _COCO_HELP.format(root=root)
    if name.startswith("digits"):
        return _DIGITS_HELP
    return "Register it with detectron2's DatasetCatalog before training."


def check_datasets(cfg, fields=("TRAIN", "TEST")):
    """Every dataset in DATASETS.<field> is registered and its files exist; a keypoint
    model's training sets have the keypoint metadata its loader reads."""
    registered = set(DatasetCatalog.list())
    for field in fields:
        for name in cfg.DATASETS[field]:
            key = f"DATASETS.{field}"
            if name not in registered:
                raise ConfigError(key, name, "a registered dataset name, e.g. "
                                  "'coco_2014_minival' or 'digits_val'", _how_to_get(name))
            meta = MetadataCatalog.get(name)
            for attr in ("json_file", "image_root"):
                path = meta.get(attr, None)
                if path and not os.path.exists(path):
                    raise DatasetError(
                        f"{key}: dataset {name!r} needs its {attr} {path!r}, which does not "
                        f"exist. {_how_to_get(name)}")
            if field == "TRAIN" and cfg.MODEL.KEYPOINT_ON:
                _check_keypoint_metadata(cfg, name, meta)


def _check_keypoint_metadata(cfg, name, meta):
    """detectron2's DatasetMapper reads keypoint_names and keypoint_flip_map of each training
    set of a keypoint model (an AttributeError; a --dataset json registers neither), and its
    head predicts NUM_KEYPOINTS of them (another count stopped the first iteration)."""
    names, count = meta.get("keypoint_names", None), cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    if names is None or meta.get("keypoint_flip_map", None) is None:
        raise DatasetError(
            f"DATASETS.TRAIN: dataset {name!r} has no keypoint_names and keypoint_flip_map in "
            "its metadata, which a MODEL.KEYPOINT_ON training reads (which keypoint a flip makes "
            "which). Register it with them (detectron2's register_coco_instances(name, "
            "{'keypoint_names': [...], 'keypoint_flip_map': [('left_eye', 'right_eye'), ...]}, "
            "json_file, image_root)), or train boxes only (MODEL.KEYPOINT_ON False).")
    if len(names) != count:
        raise ConfigError("MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", count, f"{len(names)}, the "
                          f"keypoints of DATASETS.TRAIN {name!r} ({list(names)[:20]})")


def check_weights(cfg, *, training=True):
    """MODEL.WEIGHTS is empty (from scratch), a URL detectron2 resolves, or an existing file;
    a folder (a run's OUTPUT_DIR) is named so, with the weights files it holds.
    `training` False (evaluate, predict, export: weights are required there) leaves the
    "train from scratch" way out of the message."""
    path = cfg.MODEL.WEIGHTS
    if not path or "://" in path or os.path.isfile(path):
        return
    if os.path.isdir(path):  # a run's OUTPUT_DIR, say: "expected an existing file" misled
        raise ConfigError("MODEL.WEIGHTS", path, "a weights file, not a folder",
                          f"Point MODEL.WEIGHTS at a file inside it{_weights_in(path)}.")
    if not training:
        raise ConfigError("MODEL.WEIGHTS", path, "an existing file of trained weights",
                          "Point MODEL.WEIGHTS at a train_net.py checkpoint (such as "
                          "OUTPUT_DIR/model_final.pth) or a converted file.")
    raise ConfigError("MODEL.WEIGHTS", path, "an existing checkpoint or ImageNet weights file",
                      "Download the weights the config names in its first lines (see the "
                      "README's weights table), point MODEL.WEIGHTS at them, or pass "
                      "MODEL.WEIGHTS '' to train from scratch.")


_WEIGHTS_SUFFIXES = (".pth", ".pkl", ".pyth", ".safetensors", ".t7")


def _weights_in(folder):
    """' (it holds model_final.pth, model_0000999.pth, ...)': the weights files of `folder`,
    final ones first, then the latest iterations; "" when it holds none."""
    names = [n for n in os.listdir(folder) if n.endswith(_WEIGHTS_SUFFIXES)
             and os.path.isfile(os.path.join(folder, n))]
    if not names:
        return ""
    names = sorted(sorted(names, reverse=True), key=lambda n: not n.startswith("model_final"))
    return f" (it holds {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def check_no_earlier_run(checkpointer, key="OUTPUT_DIR", outputs=()):
    """A new training (not --resume) would overwrite the checkpoints of the run already in
    the output folder (detectron2 does, and mixes both runs in metrics.json), or one of the
    files `outputs` it writes at its end (pretraining's model_final.pkl): an error."""
    folder = checkpointer.save_dir
    written = [name for name in outputs if os.path.isfile(os.path.join(folder, name))]
    if not (checkpointer.has_checkpoint() or written):
        return
    names = checkpointer.checkpoint_names() + written
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise ConfigError(key, checkpointer.save_dir, "a folder without an earlier run's "
                      f"checkpoints, for a new training (it holds {shown})", "Pass --resume to "
                      f"continue that run, choose another {key}, or remove its checkpoints.")


def lock_output_dir(folder, key="OUTPUT_DIR"):
    """A training holds its output folder's lock (utils/io.lock_folder) from before it writes
    config.yaml to its end: a second training into the folder, --resume or not, would replace
    the first one's checkpoints, metrics.json and config.yaml as they go. Main process only."""
    holder = lock_folder(folder) if comm.is_main_process() else None
    if holder is not None:
        raise ConfigError(key, folder, "a folder no other training writes in", f"Process "
                          f"{holder} trains into it (it holds {os.path.join(folder, LOCK_NAME)}):"
                          f" wait until it ends, or choose another {key}.")


def warn_resume_finds_nothing(checkpointer, weights, key="MODEL.WEIGHTS"):
    """--resume into a folder without a checkpoint (a mistyped OUTPUT_DIR, say) starts a
    new training: said as a warning (detectron2 says so in an INFO line among hundreds)."""
    if comm.is_main_process():
        start = f"{key}={weights!r}" if weights else "scratch (no weights)"
        logging.getLogger(__name__).warning(
            f"--resume: {checkpointer.save_dir!r} holds no checkpoint to resume from; a new "
            f"training starts from {start}. Check the output folder if a run was meant to go on.")


def warn_frozen_from_scratch(weights, freeze_at, key="MODEL.BACKBONE.FREEZE_AT"):
    """Warn when stages are frozen (freeze_at > 0) while there are no weights to load: they
    would keep their random initialization for the whole run (detectron2 says nothing)."""
    if weights or not isinstance(freeze_at, int) or freeze_at <= 0 or not comm.is_main_process():
        return
    frozen = "the stem" + (f" and res2..res{freeze_at}" if freeze_at > 2 else
                           " and res2" if freeze_at == 2 else "")
    logging.getLogger(__name__).warning(
        f"{key}={freeze_at} with no weights to load: {frozen} would stay at their random "
        f"initialization for the whole run (with ZERO_INIT_RESIDUAL, residual paths off). "
        f"Set {key}{'=' if key.islower() else ' '}0 to train from scratch, or give weights "
        "to start from.")  # a .py config's keys (lowercase) are set with key=value


def dataset_classes(names):
    """The class names (thing_classes) of the datasets `names`, those of the first that has
    them (detectron2 requires one list for all), or None."""
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None:
            return list(classes)
    return None


def trained_classes(cfg):
    """The class names a training's checkpoints store: DATASETS.TRAIN's thing_classes;
    None for a model whose outputs carry no class (ProposalNetwork: proposals only)."""
    if cfg.MODEL.get("META_ARCHITECTURE") == "ProposalNetwork":
        return None
    return dataset_classes(cfg.DATASETS.TRAIN)


def check_test_classes(cfg):
    """The datasets a training evaluates on have its classes in its order: else each class
    would be scored as another, in every evaluation of the run."""
    classes = trained_classes(cfg)
    for name in cfg.DATASETS.TEST if classes is not None else ():
        other = MetadataCatalog.get(name).get("thing_classes", None)
        problem = other is not None and classes_difference(
            classes, other, ("DATASETS.TRAIN", f"DATASETS.TEST {name!r}"))
        if problem:
            raise DatasetError(f"{problem}; the evaluations would score each class as another. "
                               "Evaluate on a dataset of the training's classes, in their order.")


RESUME_FIX = ("Resume on the data the run was trained on, or train into another output folder "
              "(with the checkpoint as its starting weights: fine-tuning).")
EVALUATE_FIX = ("Name a dataset of the classes the weights were trained on, in their order "
                "(a --dataset json: the same categories, the same ids).")


def check_weights_classes(checkpointer, names, key, fix=EVALUATE_FIX):
    """The class names the file just loaded stores (our trainings' checkpoints) are those
    of each dataset in `names` (the value of `key`): else a DatasetError (data/checks.py's
    check_stored_classes), as its labels would mean other classes."""
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        check_stored_classes(checkpointer.loaded_file, checkpointer.last_classes, classes,
                             f"{key} {name!r}", fix)


def mark_checkpoints(checkpointer, cfg, check_solver=None):
    """Each checkpoint of the training of `cfg` stores its class names (trained_classes), its
    input (input_conventions) and its solver (solver_settings), which evaluations and
    resumes check (the solver while a resume loads: `check_solver()`, by default
    check_resumed_solver on `cfg`)."""
    checkpointer.classes = trained_classes(cfg)
    checkpointer.trained_input = input_conventions(cfg)
    checkpointer.trained_solver = solver_settings(cfg)
    checkpointer.on_resume = check_solver or (lambda: check_resumed_solver(cfg, checkpointer))


def check_resumed_training(cfg, checkpointer):
    """A resumed run goes on as it started: the input and the class names its checkpoint
    stores (MODEL.WEIGHTS of another training is fine-tuning, and not checked); its solver
    was checked as it loaded (mark_checkpoints)."""
    check_input_conventions(cfg, checkpointer)
    if checkpointer.classes is not None:
        check_weights_classes(checkpointer, cfg.DATASETS.TRAIN, "DATASETS.TRAIN", RESUME_FIX)


# The SOLVER keys a resumed run goes on without: torch's Optimizer.load_state_dict puts back
# each parameter group's lr, momentum, nesterov and weight decay (WEIGHT_DECAY_NORM, BIAS_LR_
# FACTOR set them per group), detectron2's LRScheduler its base lr (pretraining's: BASE_LR x
# IMS_PER_BATCH / REFERENCE_BATCH), and the batch size placed the checkpoint in the data
# stream (resume.ResumableSampler: iteration x IMS_PER_BATCH).
RESUMED_SOLVER_KEYS = ("BASE_LR", "IMS_PER_BATCH", "REFERENCE_BATCH", "MOMENTUM", "NESTEROV",
                       "WEIGHT_DECAY", "WEIGHT_DECAY_NORM", "WEIGHT_DECAY_BIAS", "BIAS_LR_FACTOR")


def solver_settings(cfg):
    """{"SOLVER.<key>": value} of RESUMED_SOLVER_KEYS that `cfg` has."""
    return {f"SOLVER.{k}": cfg.SOLVER[k] for k in RESUMED_SOLVER_KEYS if k in cfg.SOLVER}


def _same_setting(value, stored):
    if isinstance(value, list):  # pixel statistics as floats, from YAML or the command line
        return (isinstance(stored, (list, tuple)) and len(stored) == len(value)
                and all(abs(float(a) - b) < 1e-6 for a, b in zip(stored, value)))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (isinstance(stored, (int, float)) and not isinstance(stored, bool)
                and abs(value - stored) <= 1e-9 * max(abs(value), abs(stored)))
    return value == stored


def _check_as_trained(settings, stored, checkpointer, fix):
    """Each {key: value} of `settings` is the value `stored` (what the file just loaded
    stores) holds for its key: else a ConfigError naming the key, ending in `fix`."""
    if not isinstance(stored, dict):  # files of others, and ours from before
        return
    for key, value in settings.items():
        if key in stored and not _same_setting(value, stored[key]):
            raise ConfigError(key, value, f"{stored[key]!r}, the value "
                              f"{checkpointer.loaded_file} was trained with", fix)


def check_resumed_solver(cfg, checkpointer):
    """--resume with the solver the checkpoint was trained with (our trainings store it): a
    changed lr, momentum or weight decay was ignored (the checkpoint's went on), a changed
    IMS_PER_BATCH restarted the data at another place with the old lr, a changed
    WEIGHT_DECAY_BIAS (parameter groups of other sizes) stopped torch's load on a ValueError."""
    _check_as_trained(solver_settings(cfg), checkpointer.last_solver, checkpointer, RESUMED_FIX)


RESUMED_FIX = ("A resumed run goes on with its checkpoint's optimizer, lr and place in the "
               "data. Resume with the run's value, or start a new run in another output folder "
               "from the checkpoint (MODEL.WEIGHTS).")


def check_iterations_left(checkpointer, start_iter, max_iter, cfg, keys=("SOLVER.MAX_ITER",)):
    """--resume with the run's end before its checkpoint: detectron2 trains nothing, exits
    0 and replaces the finished run's last evaluation record (an equal end evaluates the
    checkpoint again, as detectron2 does). `keys`: those that set the end; the first one set
    (> 0) is named."""
    if start_iter <= max_iter:
        return
    value = {key: functools.reduce(getattr, key.split("."), cfg) for key in keys}
    key = next((key for key in keys if value[key] > 0), keys[-1])
    raise ConfigError(key, value[key], f"an end at or after iteration {start_iter}, where "
                      f"{checkpointer.loaded_file or 'the last checkpoint'} resumes (this one "
                      f"ends at iteration {max_iter})", f"Raise {key} to train further, or "
                      "evaluate the checkpoint with --eval-only (into another output folder).")


WHOLE_FIX = ("Use the config the weights were trained with (their training's config.yaml): "
             "the same class count and heads.")
INPUT_FIX = "Use the config the weights were trained with (their training's config.yaml)."


def input_conventions(cfg):
    """{key: value} of what a model's weights expect of its input, as trained: the channel
    order and the pixel statistics (the model normalizes with them)."""
    return {"INPUT.FORMAT": cfg.INPUT.FORMAT,
            "MODEL.PIXEL_MEAN": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
            "MODEL.PIXEL_STD": [float(v) for v in cfg.MODEL.PIXEL_STD]}


def check_input_conventions(cfg, checkpointer):
    """The input the file just loaded was trained on (our trainings store it) is the one
    `cfg` gives the model: else a ConfigError naming the key (a detector fed BGR for RGB, or
    other statistics, detects little, silently)."""
    _check_as_trained(input_conventions(cfg), checkpointer.last_input, checkpointer, INPUT_FIX)


def check_weights_to_infer(cfg, checkpointer, names, key, fix=EVALUATE_FIX):
    """After the load of weights to evaluate, predict with or export: they fill the whole
    model (check_loaded_whole), were trained on the input `cfg` gives
    (check_input_conventions) and store the classes of `names` if any
    (check_weights_classes, ending in `fix`)."""
    if cfg.MODEL.get("META_ARCHITECTURE") != "ProposalNetwork":  # its outputs have no class
        check_weights_classes(checkpointer, names, key, fix)  # first: it tells most
    checkpointer.check_loaded_whole(WHOLE_FIX)
    check_input_conventions(cfg, checkpointer)


def check_weights_to_evaluate(cfg):
    """check_weights, and MODEL.WEIGHTS is not empty: detectron2 would evaluate the random
    initialization (an evaluation without a checkpoint to resume from)."""
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS", "", "a checkpoint to evaluate (or --resume with a "
                          "checkpoint in OUTPUT_DIR)")
    check_weights(cfg, training=False)


# detectron2 builds these samplers from a load of its own of DATASETS.TRAIN, one weight per
# image: with them, an image whose boxes were all skipped is kept, so that the weights line up.
WEIGHTED_SAMPLERS = ("WeightedTrainingSampler", "WeightedCategoryTrainingSampler")


def bad_data_policies(cfg):
    """(DATALOADER.ON_BAD_BOX, DATALOADER.ON_BAD_IMAGE), checked; defaults if cfg lacks them."""
    on_bad_box = cfg.DATALOADER.get("ON_BAD_BOX", "skip")
    on_bad_image = cfg.DATALOADER.get("ON_BAD_IMAGE", "error")
    check_choice("DATALOADER.ON_BAD_BOX", on_bad_box, BAD_BOX_POLICIES)
    check_choice("DATALOADER.ON_BAD_IMAGE", on_bad_image, BAD_IMAGE_POLICIES)
    return on_bad_box, on_bad_image


def num_classes_key(cfg):
    """(key, value) of the number of classes the model predicts; None for proposals only."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "RetinaNet":
        return "MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES
    if arch == "ProposalNetwork":
        return None
    return "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES


def _check_class_count(cfg, field, fix):
    """Each dataset of DATASETS.<field> names as many thing_classes as the model predicts,
    else a DatasetError ending in fix(key, dataset's count, model's count). Returns
    num_classes_key(cfg) (None for proposals only: no class)."""
    found = num_classes_key(cfg)
    for name in cfg.DATASETS[field] if found else ():
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != found[1]:
            raise DatasetError(
                f"{found[0]}={found[1]} does not match DATASETS.{field}: dataset {name!r} has "
                f"{len(classes)} classes (thing_classes {list(classes)[:10]})"
                + fix(found[0], len(classes), found[1]))
    return found


def check_num_classes(cfg, dataset_dicts):
    """The model predicts as many classes as each train dataset's thing_classes names.

    Datasets without thing_classes: every category_id must lie in [0, NUM_CLASSES).
    """
    found = _check_class_count(cfg, "TRAIN", lambda key, count, num_classes: (
        f". Set {key} {count}, or train on a dataset of {num_classes} classes (with fewer, "
        "the classes beyond it would be trained as background)."))
    if found:
        check_category_ids(dataset_dicts, found[1], key=found[0],
                           source=f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)!r}")


def check_evaluated_num_classes(cfg):
    """The model to evaluate predicts as many classes as each DATASETS.TEST names (a
    training checks DATASETS.TRAIN's, and that the test sets have its classes): weights of
    another class count stopped the evaluation after the whole inference (more classes) or
    scored the dataset's last classes 0 AP (fewer). Run after the sets are loaded."""
    _check_class_count(cfg, "TEST", lambda key, count, num_classes: (
        f", and the model's class k is scored as its class k. Set {key} {count} if "
        "MODEL.WEIGHTS were trained on these classes, or evaluate on a dataset of the "
        f"model's {num_classes} classes, in their order."))


def check_same_classes(names, source, off_key=None):
    """Datasets trained together name the same classes in the same order: category id k is
    one class to the model. Called where detectron2's get_detection_dataset_dicts
    (check_consistency) stopped on a bare ValueError ("Datasets have different metadata
    'thing_classes'!"), once the sets are loaded (they set thing_classes as they load); the
    comparison is detectron2's, `!=` of the stored values.

    Args:
        names: the dataset names; source: how the config names them, for the message.
        off_key (str or None): the key that turns the check off, named in the fix.
    """
    classes = [MetadataCatalog.get(name).thing_classes for name in names]
    for name, named in zip(names, classes):
        if named != classes[0]:
            off = (f", or set {off_key}=False if their ids already mean the same classes"
                   if off_key else "")
            raise DatasetError(
                f"{source}: {name!r} names its classes {list(named)}, {names[0]!r} names "
                f"them {list(classes[0])}. Train on datasets with the same thing_classes in "
                f"the same order (e.g. the same categories in each json){off}.")


def check_mask_format(cfg, dataset_dicts, source):
    """INPUT.MASK_FORMAT "polygon" cannot read RLE masks (a dict `segmentation`, as the
    digits set and COCO crowd regions have): detectron2 would stop mid-training."""
    if not cfg.MODEL.MASK_ON or cfg.INPUT.MASK_FORMAT != "polygon":
        return
    for record in dataset_dicts:
        for ann in record.get("annotations", ()):
            if isinstance(ann.get("segmentation"), dict) and not ann.get("iscrowd", 0):
                raise ConfigError(
                    "INPUT.MASK_FORMAT", "polygon", "'bitmask' for this data",
                    f"{source}: {record.get('file_name')!r} has a mask in COCO's RLE form (a "
                    "dict), which detectron2 reads only as a bitmask.")


def check_masks_present(cfg, dataset_dicts, source):
    """MODEL.MASK_ON trains on every object's mask: one without a `segmentation` stopped
    the first iteration ("Cannot find field 'gt_masks'")."""
    if not cfg.MODEL.MASK_ON:
        return
    for record in dataset_dicts:
        for ann in record.get("annotations", ()):
            if not ann.get("iscrowd", 0) and not ann.get("segmentation"):
                raise DatasetError(
                    f"{source}: {record.get('file_name')!r} has an object without a mask (no "
                    "'segmentation'), and MODEL.MASK_ON True trains on every object's mask. "
                    "Give every object a mask, or train boxes only (MODEL.MASK_ON False).")


def check_test_images(cfg):
    """Every image file of DATASETS.TEST exists, before a training or an evaluation starts
    (a missing one stopped the first evaluation, after the training, with a bare
    FileNotFoundError); boxes that no detection can match are logged."""
    for name in cfg.DATASETS.TEST:
        dicts = DatasetCatalog.get(name)
        if isinstance(dicts, list):
            check_image_files(dicts, source=f"DATASETS.TEST {name!r}")
            warn_unscorable_boxes(dicts, source=f"DATASETS.TEST {name!r}")
            if cfg.MODEL.MASK_ON:
                _warn_unscored_masks(dicts, name)


def _warn_unscored_masks(dicts, name):
    """Before the run, what COCOMetricsEvaluator says after it: no segm AP on a box-only set."""
    objects = [a for d in dicts for a in d.get("annotations", [])]
    without = sum("segmentation" not in a for a in objects)
    if without:
        logging.getLogger(__name__).warning(
            f"DATASETS.TEST {name!r}: {without} of its {len(objects)} objects have no "
            "'segmentation', so its masks will not be scored (no segm AP), only its boxes.")


# The metadata's evaluator_type of a test set -> the evaluator Trainer.build_evaluator
# gives it (detectron2's tools/train_net.py picks by it too); no type: a list of dicts,
# which COCO's evaluator converts to a COCO json first.
EVALUATORS = {"coco": "COCO", "lvis": "detectron2's LVISEvaluator",
              "pascal_voc": "detectron2's PascalVOCDetectionEvaluator"}


def evaluator_kind(dataset_name):
    """A test set's EVALUATORS key: its metadata's evaluator_type; without one, "pascal_voc"
    for a set detectron2's register_pascal_voc made (dirname, year, split: only its builtin
    voc_* sets get the type; COCO's evaluator stopped on their string image ids), else "coco"."""
    meta = MetadataCatalog.get(dataset_name)
    voc = all(key in meta.as_dict() for key in ("dirname", "year", "split"))
    return meta.get("evaluator_type", "pascal_voc" if voc else "coco")


def check_test_evaluators(cfg):
    """Each DATASETS.TEST is scored as detectron2 scores its kind (EVALUATORS): LVIS's AP
    with COCO's evaluator counted every detection of a class an image's annotators did not
    check as a false one (LVIS is federated), and the score was too low. A type without an
    evaluator here (cityscapes_instance, panoptic, sem_seg) gets COCO's, with a warning."""
    for name in cfg.DATASETS.TEST:
        meta, kind = MetadataCatalog.get(name), evaluator_kind(name)
        why = lvis_unusable() if kind == "lvis" else None
        if why:
            raise DatasetError(f"DATASETS.TEST {name!r} is an LVIS set, whose AP detectron2's "
                               f"LVISEvaluator computes with the lvis package, which {why}")
        if kind == "pascal_voc" and meta.get("year") not in (2007, 2012):
            raise DatasetError(f"DATASETS.TEST {name!r} is a Pascal VOC set of year "
                               f"{meta.get('year')!r}: detectron2's PascalVOCDetectionEvaluator "
                               "scores the 2007 (11-point AP) and 2012 rules only; register it "
                               "with year 2007 or 2012.")
        if kind not in EVALUATORS:
            logging.getLogger(__name__).warning(
                f"DATASETS.TEST {name!r} has evaluator_type {kind!r}: its "
                "detections are scored with COCO's instance metrics only (not detectron2's "
                f"{kind} evaluation)")


def checked_train_dicts(cfg, check_consistency=True, consistency_key=None):
    """DATASETS.TRAIN's dataset dicts, loaded once as detectron2 loads them, and checked.

    Before the first iteration: the datasets' class names (detectron2's check, its bare
    ValueError named by check_same_classes; none if `check_consistency` is False), the class
    count against NUM_CLASSES, every box (DATALOADER.ON_BAD_BOX) and that every image file
    exists. Images left without a usable box are dropped when
    DATALOADER.FILTER_EMPTY_ANNOTATIONS is on, and those left with fewer than
    MIN_KEYPOINTS_PER_IMAGE visible keypoints (MODEL.KEYPOINT_ON), as detectron2 does.

    Args:
        check_consistency (bool): get_detection_dataset_dicts' argument of that name (the
            YAML configs have no key for it: on).
        consistency_key (str or None): the config key that turns it off, for the error.
    """
    on_bad_box, _ = bad_data_policies(cfg)
    min_keypoints = (cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
                     if cfg.MODEL.KEYPOINT_ON else 0)
    source = f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)!r}"
    try:
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=min_keypoints,
            check_consistency=check_consistency, proposal_files=(
                cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None))
    except ValueError as e:  # its check_metadata_consistency, once the sets (and names) loaded
        if check_consistency and "different metadata 'thing_classes'" in str(e):
            check_same_classes(cfg.DATASETS.TRAIN, source, consistency_key)
        raise
    if not isinstance(dicts, list):  # a torch Dataset: nothing to check before reading it
        return dicts
    check_num_classes(cfg, dicts)
    check_mask_format(cfg, dicts, source)
    check_masks_present(cfg, dicts, source)
    checked = check_boxes(dicts, on_bad_box=on_bad_box, source=source)
    if checked is not dicts and cfg.DATALOADER.SAMPLER_TRAIN not in WEIGHTED_SAMPLERS:
        checked = refiltered(checked, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, min_keypoints)
        if not checked:
            raise DatasetError(f"{source}: no image has a usable box left. Fix the boxes "
                               "listed above.")
    check_image_files(checked, source=source)
    check_subset_size(cfg, len(checked))
    return checked


def check_subset_size(cfg, num_images):
    """RandomSubsetTrainingSampler samples from int(num_images x DATALOADER.RANDOM_SUBSET_RATIO)
    images: a ratio that leaves none stopped the loader on a bare AssertionError."""
    sampler, ratio = cfg.DATALOADER.SAMPLER_TRAIN, cfg.DATALOADER.get("RANDOM_SUBSET_RATIO", 1.0)
    if sampler == "RandomSubsetTrainingSampler" and int(num_images * ratio) < 1:
        raise ConfigError("DATALOADER.RANDOM_SUBSET_RATIO", ratio, f"at least 1/{num_images}",
                          f"DATASETS.TRAIN has {num_images} training images; the subset is "
                          "int(images x ratio) of them, none at this ratio.")


def refiltered(dataset_dicts, filter_empty, min_keypoints):
    """The dicts after bad boxes were left out, filtered again as get_detection_dataset_dicts
    filters: images without a non-crowd box (`filter_empty`), and images with fewer than
    `min_keypoints` visible keypoints (> 0; a left-out box takes its keypoints with it)."""
    if filter_empty:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts)
    if min_keypoints > 0:
        dataset_dicts = filter_images_with_few_keypoints(dataset_dicts, min_keypoints)
    return dataset_dicts
