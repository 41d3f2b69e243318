"""Classification datasets: an ImageNet-style folder, and CIFAR-10/100 from their pickles.

Folder layout (ImageNet's, torchvision's ImageFolder):

    ROOT/train/<class>/<image>.JPEG      classes = the sorted folder names; label = index
    ROOT/val/<class>/<image>.JPEG        the same class folders as train

A corrupt or truncated image is reported with its path, and skipped or raised as
DATA.ON_BAD_IMAGE says; a split with no class folder, or a class folder with no image,
is an error that names the folder.
"""
import logging
import os
import pickle

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..checkpoint.readers import WeightsUnpickler
from ..errors import UserError

logger = logging.getLogger(__name__)
BAD_IMAGE_POLICIES = ("skip", "error")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# name -> (folder of the python release, train files, test files, label key, meta file, names key)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta",
                 b"fine_label_names"),
}


class DatasetError(UserError, ValueError):
    """A dataset folder or file that cannot be used as it is; the message says why and where."""


class BadImageError(UserError, OSError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def find_classes(split_dir):
    """Sorted class folder names of split_dir; errors naming the folder if there are none."""
    if not os.path.isdir(split_dir):
        raise DatasetError(f"{split_dir}: no such folder. Expected an ImageNet-style layout "
                           f"{split_dir}/<class>/<image> (set DATA.ROOT and DATA.*_SPLIT).")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise DatasetError(f"{split_dir}: no class folders found. Expected one folder per "
                           f"class holding its images, e.g. {split_dir}/n01440764/x.JPEG.")
    return classes


def list_images(class_dir, extensions):
    """Sorted paths under class_dir (recursively) whose names end with one of extensions."""
    ends = tuple(e.lower() for e in extensions)
    found = [os.path.join(folder, name)
             for folder, _, names in os.walk(class_dir, followlinks=True)
             for name in names if name.lower().endswith(ends)]
    return sorted(found)


def scan_folder(split_dir, extensions):
    """(classes, [(path, label)]) of an ImageNet-style split; every class must have images."""
    classes = find_classes(split_dir)
    samples, empty = [], []
    for label, name in enumerate(classes):
        paths = list_images(os.path.join(split_dir, name), extensions)
        empty += [] if paths else [name]
        samples += [(path, label) for path in paths]
    if empty:
        raise DatasetError(f"{split_dir}: class folders with no image ending in "
                           f"{list(extensions)}: {empty[:10]}{' ...' if len(empty) > 10 else ''}")
    return classes, samples


def read_image(path):
    """An RGB PIL image, fully decoded; BadImageError naming the path if it cannot be."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # decodes all pixels: truncation shows here
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError
        raise BadImageError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


class _Samples(Dataset):
    """Shared indexing: transform each loaded image; the bad-image policy."""

    def __init__(self, classes, transform=None, on_bad_image="skip"):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise DatasetError(f"DATA.ON_BAD_IMAGE={on_bad_image!r} is not valid: expected one "
                               f"of {list(BAD_IMAGE_POLICIES)}")
        self.classes, self.transform, self.on_bad_image = list(classes), transform, on_bad_image
        self.bad_paths = set()  # seen by this process (each loader worker has its own)

    def _load(self, index):
        raise NotImplementedError

    def __getitem__(self, index):
        for step in range(min(len(self), 100)):
            try:
                image, label = self._load((index + step) % len(self))
                break
            except BadImageError as e:
                if self.on_bad_image == "error":
                    raise BadImageError(f"{e} [DATA.ON_BAD_IMAGE='skip' skips such files]") from e
                if str(e) not in self.bad_paths:
                    self.bad_paths.add(str(e))
                    logger.warning(f"Skipping a bad image (DATA.ON_BAD_IMAGE='skip'): {e}")
        else:
            raise BadImageError(f"{min(len(self), 100)} bad images in a row from index {index}; "
                                "is the dataset readable at all?")
        return (self.transform(image) if self.transform else image), label


class FolderDataset(_Samples):
    """ImageNet-style split folder: (transformed image, class index) per image."""

    def __init__(self, split_dir, transform=None, extensions=(".jpeg", ".jpg", ".png"),
                 on_bad_image="skip"):
        classes, self.samples = scan_folder(split_dir, extensions)
        super().__init__(classes, transform, on_bad_image)
        self.root = split_dir

    def __len__(self):
        return len(self.samples)

    def _load(self, index):
        path, label = self.samples[index]
        return read_image(path), label


def cifar_dir(root, name):
    """The folder holding the pickles of `name`: ROOT/<release folder>, or ROOT itself."""
    folder = CIFAR[name][0]
    inside = os.path.basename(os.path.normpath(root)) == folder
    return root if inside else os.path.join(root, folder)


def _unpickle(path):
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing. Expected the python release of CIFAR ({CIFAR_URL}) "
                           "extracted under DATA.ROOT.")
    with open(path, "rb") as f:  # data, not code: the restricted unpickler of weights files
        try:
            return WeightsUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as e:
            raise DatasetError(f"{path}: not the CIFAR python release ({e}).") from None


def load_cifar(root, name, train):
    """(images uint8 (N, 32, 32, 3) RGB, labels int64 (N,), class names) of a CIFAR split."""
    if name not in CIFAR:
        raise DatasetError(f"DATA.NAME={name!r} is not a CIFAR set: expected one of {list(CIFAR)}")
    folder, train_files, test_files, label_key, meta_file, names_key = CIFAR[name]
    base = cifar_dir(root, name)
    batches = [_unpickle(os.path.join(base, f)) for f in (train_files if train else test_files)]
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    names = [n.decode() for n in _unpickle(os.path.join(base, meta_file))[names_key]]
    return images.transpose(0, 2, 3, 1).copy(), labels, names


class CifarDataset(_Samples):
    """A CIFAR-10/100 split from the python-pickle release: (transformed image, label)."""

    def __init__(self, root, name="cifar10", train=True, transform=None):
        self.images, self.labels, classes = load_cifar(root, name, train)
        super().__init__(classes, transform, "error")

    def __len__(self):
        return len(self.labels)

    def _load(self, index):
        return Image.fromarray(self.images[index]), int(self.labels[index])


def build_dataset(cfg, train, transform):
    """The training (train=True) or validation split a config names."""
    d = cfg.DATA
    if d.NAME == "folder":
        split = os.path.join(d.ROOT, d.TRAIN_SPLIT if train else d.VAL_SPLIT)
        return FolderDataset(split, transform, tuple(d.EXTENSIONS), d.ON_BAD_IMAGE)
    if d.NAME in CIFAR:
        return CifarDataset(d.ROOT, d.NAME, train, transform)
    raise DatasetError(f"DATA.NAME={d.NAME!r} is not valid: expected one of "
                       f"{['folder'] + list(CIFAR)}")


def check_same_classes(train_set, val_set):
    """Validation labels mean what training labels mean: the same class list."""
    if train_set.classes != val_set.classes:
        only_train = sorted(set(train_set.classes) - set(val_set.classes))[:5]
        only_val = sorted(set(val_set.classes) - set(train_set.classes))[:5]
        raise DatasetError(f"training and validation classes differ (only in train: {only_train}, "
                           f"only in val: {only_val}); labels are class folder indices, so both "
                           "splits need the same class folders.")
