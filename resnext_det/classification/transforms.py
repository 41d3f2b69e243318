"""Training and test transforms: PIL RGB image -> normalized float tensor (3, H, W).

Normalization follows detectron2's convention so that pretrained features transfer:
0-255 pixels in INPUT.FORMAT order, x' = (x - PIXEL_MEAN) / PIXEL_STD. With torchvision's
statistics times 255 it is exactly torchvision's ImageNet normalization.
"""
import torch
from torchvision import transforms as T

from ..config.errors import ConfigError

TRAIN_CROPS = ("random_resized", "pad_crop", "none")


class ToModelInput:
    """PIL RGB -> float tensor in INPUT.FORMAT order, normalized as detectron2 does."""

    def __init__(self, pixel_mean, pixel_std, input_format="RGB"):
        if input_format not in ("RGB", "BGR"):
            raise ConfigError("INPUT.FORMAT", input_format, "'RGB' or 'BGR'")
        self.bgr = input_format == "BGR"
        self.mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image):
        x = T.functional.pil_to_tensor(image).float()  # (3, H, W), 0-255, RGB
        if self.bgr:
            x = x.flip(0)
        return (x - self.mean) / self.std


def _train_crop(inp):
    if inp.TRAIN_CROP == "random_resized":
        return [T.RandomResizedCrop(inp.TRAIN_SIZE, scale=tuple(inp.SCALE), ratio=tuple(inp.RATIO))]
    if inp.TRAIN_CROP == "pad_crop":
        return [T.RandomCrop(inp.TRAIN_SIZE, padding=inp.PAD)]
    if inp.TRAIN_CROP == "none":
        return [T.Resize((inp.TRAIN_SIZE, inp.TRAIN_SIZE))]
    raise ConfigError("INPUT.TRAIN_CROP", inp.TRAIN_CROP, f"one of {list(TRAIN_CROPS)}")


def build_train_transform(cfg):
    """Crop (INPUT.TRAIN_CROP), optional flip and color jitter, normalize."""
    inp = cfg.INPUT
    ops = _train_crop(inp)
    if inp.RANDOM_FLIP:
        ops.append(T.RandomHorizontalFlip())
    if inp.COLOR_JITTER > 0:
        ops.append(T.ColorJitter(*[inp.COLOR_JITTER] * 3))
    ops.append(ToModelInput(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, inp.FORMAT))
    return T.Compose(ops)


def build_test_transform(cfg):
    """Shorter side to INPUT.TEST_RESIZE, center INPUT.TEST_CROP crop, normalize."""
    inp = cfg.INPUT
    if inp.TEST_CROP > inp.TEST_RESIZE:
        raise ConfigError("INPUT.TEST_CROP", inp.TEST_CROP,
                          f"<= INPUT.TEST_RESIZE={inp.TEST_RESIZE}")
    return T.Compose([T.Resize(inp.TEST_RESIZE), T.CenterCrop(inp.TEST_CROP),
                      ToModelInput(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, inp.FORMAT)])
