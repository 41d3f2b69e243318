"""Checks that turn a missing dataset or weights file into one clear error before training."""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config.errors import ConfigError

_COCO_HELP = (
    "Put COCO under $DETECTRON2_DATASETS/coco (DETECTRON2_DATASETS={root}), laid out as in "
    "detectron2's datasets/README.md: coco/train2014, coco/val2014, coco/train2017, "
    "coco/val2017 and coco/annotations/instances_*.json; the 2014 minival and "
    "valminusminival json files are Detectron's splits (instances_minival2014.json, "
    "instances_valminusminival2014.json).")
_DIGITS_HELP = ("Build it with: python tools/build_digits_dataset.py (or `make demo`), "
                "which writes $DETECTRON2_DATASETS/digits.")


def _how_to_get(name):
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    if name.startswith("coco"):
        return _COCO_HELP.format(root=root)
    if name.startswith("digits"):
        return _DIGITS_HELP
    return "Register it with detectron2's DatasetCatalog before training."


def check_datasets(cfg, fields=("TRAIN", "TEST")):
    """Every dataset in DATASETS.<field> is registered and its files exist."""
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
                    raise FileNotFoundError(
                        f"{key}: dataset {name!r} needs its {attr} {path!r}, which does not "
                        f"exist. {_how_to_get(name)}")


def check_weights(cfg):
    """MODEL.WEIGHTS is empty (from scratch), a URL detectron2 resolves, or an existing file."""
    path = cfg.MODEL.WEIGHTS
    if not path or "://" in path or os.path.isfile(path):
        return
    raise ConfigError("MODEL.WEIGHTS", path, "an existing checkpoint or ImageNet weights file",
                      "Download the weights the config names in its first lines (see the "
                      "README's weights table), point MODEL.WEIGHTS at them, or pass "
                      "MODEL.WEIGHTS '' to train from scratch.")
