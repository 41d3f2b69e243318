"""Classification data: torchvision's ImageFolder for ImageNet-style folders, CIFAR pickles.

    ROOT/train/<class>/<image>.JPEG      classes = the sorted folder names; label = index
    ROOT/val/<class>/<image>.JPEG        the same class folders as train

A bad image is named, then skipped or raised as DATA.ON_BAD_IMAGE says (training uses the
next image instead, validation leaves it out of the metrics: IGNORED_LABEL); a missing split,
a split without class folders or a class without images is an error naming the folder.
"""
import logging
import os
import pickle

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from ..checkpoint.readers import WeightsUnpickler
from .checks import BadImageError, DatasetError, as_rgb, classes_difference

logger = logging.getLogger(__name__)
# The label of a skipped validation image: its (blank) picture keeps the batch shape, and
# the evaluator counts no row with this label.
IGNORED_LABEL = -1
# name -> (folder of the python release, train files, test files, label key, meta file, names key)
CIFAR = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                     ["test_batch"], b"labels", "batches.meta", b"label_names"),
         "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta",
                      b"fine_label_names")}


def read_image(path):
    """An RGB PIL image, fully decoded; BadImageError naming the path if it cannot be."""
    try:
        with Image.open(path) as image:
            return as_rgb(image, path)  # decodes all pixels: truncation shows here
    except BadImageError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError
        raise BadImageError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def _check_each_folder_once(root):
    """ImageFolder walks `root` following links: a folder reached twice (a link to a folder
    above it, or two links to one folder) would be read again, under another class, or
    without end."""
    seen = {}
    for folder, _, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            raise DatasetError(f"{folder}: the folder {seen[real]} again, through a symbolic "
                               "link; its images would be read twice, under two classes, or "
                               "without end. Remove the link (or link the images, not folders).")
        seen[real] = folder


class FolderDataset(ImageFolder):
    """ImageFolder with errors that name the folder, and DATA.ON_BAD_IMAGE: "skip" logs a
    bad image once with its path and, with `replace_bad`, uses the next one (training),
    else returns a blank picture labelled IGNORED_LABEL (validation: counted nowhere, and
    no other image counted twice); "error" raises a BadImageError."""

    def __init__(self, split_dir, transform=None, extensions=(".jpeg", ".jpg", ".png"),
                 on_bad_image="skip", replace_bad=True):
        if on_bad_image not in ("skip", "error"):
            raise DatasetError(f"DATA.ON_BAD_IMAGE={on_bad_image!r} is not valid: expected one "
                               "of ['skip', 'error']")
        if not os.path.isdir(split_dir):
            raise DatasetError(f"{split_dir}: no such folder. Expected an ImageNet-style layout "
                               f"{split_dir}/<class>/<image> (set DATA.ROOT and DATA.*_SPLIT).")
        _check_each_folder_once(split_dir)
        ends = tuple(e.lower() for e in extensions)
        try:
            super().__init__(split_dir, transform, loader=read_image,
                             is_valid_file=lambda path: path.lower().endswith(ends))
        except FileNotFoundError as e:  # a class folder without images
            raise DatasetError(f"{split_dir}: {e}(images end in {list(ends)})") from None
        self.on_bad_image, self.replace_bad, self.bad_paths = on_bad_image, replace_bad, set()

    def find_classes(self, directory):
        try:
            classes, class_to_idx = super().find_classes(directory)
        except FileNotFoundError:
            classes = []
        if len(classes) < 2:  # one class would train to loss 0 and 0% error
            found = f"1 class folder found ({classes[0]})" if classes else "no class folders found"
            raise DatasetError(f"{directory}: {found}; a classifier needs at least 2. Expected "
                               "one folder per class holding its images, e.g. "
                               f"{directory}/n01440764/x.JPEG.")
        return classes, class_to_idx

    def __getitem__(self, index):
        for step in range(min(len(self), 100)):
            try:
                return super().__getitem__((index + step) % len(self))
            except BadImageError as e:
                if self.on_bad_image == "error":
                    raise BadImageError(f"{e} [DATA.ON_BAD_IMAGE='skip' skips such files]") from e
                if str(e) not in self.bad_paths:  # once per process (and loader worker)
                    self.bad_paths.add(str(e))
                    logger.warning(f"Skipping a bad image (DATA.ON_BAD_IMAGE='skip'): {e}")
                if not self.replace_bad:
                    blank = Image.new("RGB", (32, 32))
                    return (self.transform(blank) if self.transform else blank), IGNORED_LABEL
        raise BadImageError(f"{step + 1} bad images in a row from index {index}; is the "
                            "dataset readable at all?")


def _unpickle(path, keys):
    """The dict a CIFAR python-release file holds, with `keys`; DatasetError naming it if not."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing. Expected the python release of CIFAR (https://"
                           "www.cs.toronto.edu/~kriz/cifar.html) extracted under DATA.ROOT.")
    # torchvision's CIFAR10 runs pickle.load on these files, which runs any code a file
    # carries; data files get the restricted unpickler of weights files instead.
    with open(path, "rb") as f:
        try:
            obj = WeightsUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as e:
            raise DatasetError(f"{path}: not the CIFAR python release ({type(e).__name__}: "
                               f"{e}); download and extract it again.") from None
    if isinstance(obj, dict):  # the release's keys are Python 2 str (bytes here); a file
        # pickled again by Python 3 has str keys, which torchvision's reader takes as well
        obj = {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}
    missing = [k.decode() for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise DatasetError(f"{path}: not the CIFAR python release (no {missing} in it); "
                           "download and extract it again.")
    return obj


def _images_and_labels(batch, label_key, path):
    """(N, 32, 32, 3) uint8 RGB images and their N labels of one batch file."""
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or \
            labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: expected 'data' uint8 (N, 3072) and N integer "
                           f"{label_key.decode()!r}, got {data.dtype} {data.shape} and "
                           f"{labels.dtype} {labels.shape}; download and extract it again.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


class CifarDataset(Dataset):
    """A CIFAR-10/100 split of the python release in ROOT/<release folder> (or ROOT itself)."""

    def __init__(self, root, name="cifar10", train=True, transform=None):
        folder, train_files, test_files, label_key, meta_file, names_key = CIFAR[name]
        inside = os.path.basename(os.path.normpath(root)) == folder
        base = root if inside else os.path.join(root, folder)
        paths = [os.path.join(base, f) for f in (train_files if train else test_files)]
        parts = [_images_and_labels(_unpickle(p, (b"data", label_key)), label_key, p) for p in paths]
        self.images = np.concatenate([images for images, _ in parts])  # (N, 32, 32, 3) uint8 RGB
        self.labels = np.concatenate([labels for _, labels in parts])
        meta = os.path.join(base, meta_file)
        self.classes = [n.decode() if isinstance(n, bytes) else n
                        for n in _unpickle(meta, (names_key,))[names_key]]
        if not len(self.labels):
            raise DatasetError(f"{base}: no images in {[os.path.basename(p) for p in paths]}; "
                               "download and extract the release again.")
        bad = sorted(set(self.labels[(self.labels < 0) | (self.labels >= len(self.classes))]))
        if bad:
            raise DatasetError(f"{base}: labels {bad[:5]} outside the {len(self.classes)} classes "
                               f"of {meta}; download and extract the release again.")
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def build_dataset(cfg, train, transform):
    """The training (train=True) or validation split that DATA.* names."""
    d = cfg.DATA
    if d.NAME == "folder":
        split = os.path.join(d.ROOT, d.TRAIN_SPLIT if train else d.VAL_SPLIT)
        return FolderDataset(split, transform, tuple(d.EXTENSIONS), d.ON_BAD_IMAGE,
                             replace_bad=train)
    if d.NAME in CIFAR:
        return CifarDataset(d.ROOT, d.NAME, train, transform)
    raise DatasetError(f"DATA.NAME={d.NAME!r} is not valid: expected one of {['folder', *CIFAR]}")


def check_same_classes(train_set, val_set):
    """Validation labels mean what training labels mean: the same class folders."""
    problem = classes_difference(train_set.classes, val_set.classes, ("train", "val"))
    if problem:
        raise DatasetError(f"{problem}; labels are indices in the sorted class folder names, "
                           "so both splits need the same class folders.")
