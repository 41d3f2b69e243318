"""The digits demo set as detectron2 datasets: register it, building it first if needed."""
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .digits import SPLITS, DigitsSpec, build_digits_dataset, detection_paths, is_current
from .source import DIGIT_CLASSES

DEFAULT_NAMES = ("digits_train", "digits_val")


def register_digits(root, names=DEFAULT_NAMES):
    """Register root's detection train and val sets under `names`; returns the names.

    Uses detectron2's register_coco_instances, so the metadata holds thing_classes
    ("0".."9"), json_file, image_root and evaluator_type "coco". Idempotent: a name that
    already points at the same files is kept; one that points elsewhere is re-registered.
    Nothing is read until DatasetCatalog.get(name).
    """
    if (isinstance(names, str) or len(names) != len(SPLITS)
            or not all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"names={names!r} is not valid: expected two dataset names, "
                         "for train and val, e.g. ('digits_train', 'digits_val').")
    for name, split in zip(names, SPLITS):
        json_file, image_root = detection_paths(Path(root).resolve(), split)
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {"thing_classes": list(DIGIT_CLASSES)},
                                json_file, image_root)
    return tuple(names)


def ensure_digits_dataset(root, names=DEFAULT_NAMES, progress_every=500, **spec_fields):
    """Build the set under root unless its manifest matches, then register it.

    `spec_fields` are DigitsSpec's fields (num_train, num_val, image_size, seed, ...);
    a bad one raises ValueError naming it, before anything is written. A root whose
    manifest holds other fields, another render version, or none (never built, or an
    interrupted build) is rebuilt. Returns the DigitsSpec.
    """
    spec = DigitsSpec(**spec_fields)
    if not is_current(root, spec):
        build_digits_dataset(root, spec, progress_every)
    register_digits(root, names)
    return spec
