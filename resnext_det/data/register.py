"""The digits demo set as detectron2 datasets: registered on request, never at import.

`import resnext_det` registers models only. A tool or script that trains on the demo set
calls `register_digits()` (or `ensure_digits_dataset`, which builds the set first);
tools/train_net.py calls `register_digits_named_in(cfg)`, which registers the demo sets
that the config's DATASETS name.
"""
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .digits import SPLITS, DigitsSpec, build_digits_dataset, detection_paths, is_current
from .source import DIGIT_CLASSES

DEFAULT_NAMES = ("digits_train", "digits_val")


def digits_root():
    """$DETECTRON2_DATASETS/digits (default ./datasets/digits), where the tools build the set."""
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "digits")


def _register_split(name, root, split):
    """`name` -> root's detection `split`; kept if it already points at the same files."""
    json_file, image_root = detection_paths(Path(root).resolve(), split)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {"thing_classes": list(DIGIT_CLASSES)}, json_file, image_root)


def register_digits(root=None, names=DEFAULT_NAMES):
    """Register root's detection train and val sets under `names`; returns the names.

    Args:
        root: the set's folder; None -> digits_root() ($DETECTRON2_DATASETS/digits).
        names: two dataset names, for train and val.
    Uses detectron2's register_coco_instances, so the metadata holds thing_classes
    ("0".."9"), json_file, image_root and evaluator_type "coco". Idempotent: a name that
    already points at the same files is kept; one that points elsewhere is re-registered.
    Nothing is read until DatasetCatalog.get(name).
    """
    if (isinstance(names, str) or len(names) != len(SPLITS)
            or not all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"names={names!r} is not valid: expected two dataset names, "
                         "for train and val, e.g. ('digits_train', 'digits_val').")
    root = digits_root() if root is None else root
    for name, split in zip(names, SPLITS):
        _register_split(name, root, split)
    return tuple(names)


def register_digits_named_in(cfg, root=None):
    """Register digits_train / digits_val where cfg.DATASETS names them and they are not registered.

    A name already in DatasetCatalog is left as it is (the caller registered it, maybe
    at another root). Returns the names registered here, () when none.

    Args:
        cfg: a detectron2 config (DATASETS.TRAIN and DATASETS.TEST are read).
        root: as in register_digits.
    """
    named = set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)
    registered = set(DatasetCatalog.list())
    todo = [(name, split) for name, split in zip(DEFAULT_NAMES, SPLITS)
            if name in named and name not in registered]
    root = digits_root() if root is None else root
    for name, split in todo:
        _register_split(name, root, split)
    return tuple(name for name, _ in todo)


def ensure_digits_dataset(root=None, names=DEFAULT_NAMES, progress_every=500, **spec_fields):
    """Build the set under root unless its manifest matches, then register it.

    `root` None -> digits_root(). `spec_fields` are DigitsSpec's fields (num_train,
    num_val, image_size, seed, ...); a bad one raises ValueError naming it, before
    anything is written. A root whose manifest holds other fields, another render version,
    or none (never built, or an interrupted build) is rebuilt. Returns the DigitsSpec.
    """
    root = digits_root() if root is None else root
    spec = DigitsSpec(**spec_fields)
    if not is_current(root, spec):
        build_digits_dataset(root, spec, progress_every)
    register_digits(root, names)
    return spec
