"""A tiny generated ImageNet-style folder and a tiny classification config."""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from resnext_det.classification import get_cls_cfg

CLASSES = ("red", "green", "blue")
TINY_MODEL = ["MODEL.DEVICE", "cpu", "MODEL.RESNEXT.TEMPLATE", "X50_2x2d",
              "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16]


def write_folder(root, per_class=(6, 2), size=16, seed=0):
    """root/{train,val}/<class>/*.png: noise with one bright channel per class (learnable)."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_class):
        for label, name in enumerate(CLASSES):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
                pixels[..., label] += 120
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return Path(root)


def tiny_opts(data_root, output_dir, *extra):
    """KEY VALUE overrides: the tiny model on the tiny folder, 4 images per batch."""
    return [str(x) for x in TINY_MODEL + [
        "DATA.ROOT", data_root, "DATA.NUM_WORKERS", 0, "INPUT.TRAIN_SIZE", 16,
        "INPUT.SCALE", "(0.5,1.0)", "INPUT.TEST_RESIZE", 16, "INPUT.TEST_CROP", 16,
        "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_EPOCHS", 2, "SOLVER.STEPS", "(1,)",
        "SOLVER.CHECKPOINT_PERIOD", 3, "TEST.IMS_PER_BATCH", 4, "LOG_PERIOD", 1,
        "OUTPUT_DIR", output_dir, *extra]]


def tiny_cfg(data_root, output_dir, *extra):
    cfg = get_cls_cfg()
    cfg.merge_from_list(tiny_opts(data_root, output_dir, *extra))
    return cfg


def cls_args(opts, resume=False, eval_only=False, config_file=""):
    """What tools/pretrain_cls.py parses, for one process."""
    return argparse.Namespace(config_file=config_file, opts=list(opts), resume=resume,
                              eval_only=eval_only, num_gpus=1, num_machines=1, machine_rank=0,
                              dist_url="auto")
