"""Training and test transforms: PIL RGB image -> float tensor (3, H, W) as the model takes it.

detectron2's normalization, so that pretrained features transfer: 0-255 pixels in
INPUT.FORMAT order, x' = (x - PIXEL_MEAN) / PIXEL_STD (torchvision's, with its statistics).
"""
import math

import torch
from torchvision import transforms as T

from ..config.errors import ConfigError, check_choice, check_whole


class ToModelInput:
    """PIL RGB -> float tensor in INPUT.FORMAT order, normalized as detectron2 does."""

    def __init__(self, pixel_mean, pixel_std, input_format="RGB"):
        if input_format not in ("RGB", "BGR"):
            raise ConfigError("INPUT.FORMAT", input_format, "'RGB' or 'BGR'")
        self.bgr = input_format == "BGR"
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1)
                               for v in (pixel_mean, pixel_std))

    def __call__(self, image):
        x = T.functional.pil_to_tensor(image).float()  # (3, H, W), 0-255, RGB
        return ((x.flip(0) if self.bgr else x) - self.mean) / self.std


def check_sizes(inp):
    """The INPUT sizes and ranges, checked when the transforms are built (torchvision
    answers a bad one from inside the data loader, TEST_CROP 0 after an epoch)."""
    for key, low in (("TRAIN_SIZE", 1), ("TEST_RESIZE", 1), ("TEST_CROP", 1), ("PAD", 0)):
        check_whole(f"INPUT.{key}", inp[key], low, " (pixels)")
    for key, top, what in (("SCALE", 1.0, "area fractions 0 < low <= high <= 1, e.g. (0.08, 1)"),
                           ("RATIO", math.inf, "aspect ratios 0 < low <= high, e.g. (0.75, 1.33)")):
        pair = tuple(inp[key])
        if not (len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
                and 0 < pair[0] <= pair[1] <= top):
            raise ConfigError(f"INPUT.{key}", pair, what)


def build_train_transform(cfg):
    """Crop (INPUT.TRAIN_CROP), optional flip and color jitter, normalize."""
    inp = cfg.INPUT
    check_sizes(inp)
    crops = {"random_resized": lambda: T.RandomResizedCrop(inp.TRAIN_SIZE, tuple(inp.SCALE),
                                                           tuple(inp.RATIO)),
             "pad_crop": lambda: T.RandomCrop(inp.TRAIN_SIZE, padding=inp.PAD),
             "none": lambda: T.Resize((inp.TRAIN_SIZE, inp.TRAIN_SIZE))}
    ops = [crops[check_choice("INPUT.TRAIN_CROP", inp.TRAIN_CROP, crops)]()]
    if inp.RANDOM_FLIP:
        ops.append(T.RandomHorizontalFlip())
    if inp.COLOR_JITTER > 0:
        ops.append(T.ColorJitter(*[inp.COLOR_JITTER] * 3))
    return T.Compose(ops + [ToModelInput(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, inp.FORMAT)])


def build_test_transform(cfg):
    """Shorter side to INPUT.TEST_RESIZE, center INPUT.TEST_CROP crop, normalize."""
    inp = cfg.INPUT
    check_sizes(inp)
    if inp.TEST_CROP > inp.TEST_RESIZE:
        raise ConfigError("INPUT.TEST_CROP", inp.TEST_CROP,
                          f"<= INPUT.TEST_RESIZE={inp.TEST_RESIZE}")
    return T.Compose([T.Resize(inp.TEST_RESIZE), T.CenterCrop(inp.TEST_CROP),
                      ToModelInput(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, inp.FORMAT)])
