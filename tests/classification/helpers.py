"""A tiny generated ImageNet-style folder, a tiny classification config, and the validation
metrics of a checkpoint computed by hand (torchvision's transforms, torch's cross-entropy)."""
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


def by_hand_val_metrics(cfg, data_root, weights):
    """{"loss", "top1_err", "images"} of the checkpoint `weights` on data_root/val, by hand:
    the model of `cfg` with weights' "model", torchvision's Resize / CenterCrop / ToTensor at
    INPUT.TEST_RESIZE / TEST_CROP, cfg's mean and std, torch's cross-entropy and argmax.
    None of resnext_det's data loading, evaluator or trainer."""
    import torch
    import torch.nn.functional as F
    from torchvision import transforms as T

    from resnext_det.checkpoint import read_weights
    from resnext_det.classification import build_cls_model

    paths = sorted((Path(data_root) / "val").glob("*/*.png"))
    classes = sorted(p.name for p in (Path(data_root) / "val").iterdir())
    model = build_cls_model(cfg, len(classes)).eval()
    model.load_state_dict(read_weights(weights).obj["model"])
    mean, std = (torch.tensor(cfg.MODEL[key]).view(3, 1, 1) / 255  # torchvision's 0-1 units
                 for key in ("PIXEL_MEAN", "PIXEL_STD"))
    transform = T.Compose([T.Resize(cfg.INPUT.TEST_RESIZE), T.CenterCrop(cfg.INPUT.TEST_CROP),
                           T.ToTensor()])
    images = torch.stack([(transform(Image.open(p).convert("RGB")) - mean) / std for p in paths])
    labels = torch.tensor([classes.index(p.parent.name) for p in paths])
    with torch.no_grad():
        logits = model(images)
    wrong = int((logits.argmax(1) != labels).sum())
    return {"loss": float(F.cross_entropy(logits, labels)), "top1_err": 100 * wrong / len(paths),
            "images": len(paths)}
