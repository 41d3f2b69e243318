"""Checks of detection training data, before the first iteration and while images are read.

detectron2 trains on whatever the dataset dicts hold: a box of negative width becomes
another box (its corners are sorted when transformed), a box wholly outside its image is
dropped without a word, and an image that cannot be decoded stops the run mid-training with
no path. The functions here take the dicts of `get_detection_dataset_dicts` and say so
before training; `BadImageGuard` wraps the train mapper so that a bad image is named.
Only absolute boxes (XYXY_ABS, XYWH_ABS) are checked; crowd annotations are left as they
are (detectron2's mapper drops them from training).
"""
import logging
import math
import os

import numpy as np

from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode
from PIL import ExifTags, Image

from ..config.errors import check_choice
from ..errors import UserError

logger = logging.getLogger(__name__)

BAD_BOX_POLICIES = ("skip", "error")
BAD_IMAGE_POLICIES = ("error", "skip")
NUM_EXAMPLES = 5  # bad boxes / missing files quoted in a message
# What PIL raises for a file it cannot decode: OSError (truncated, not an image, missing),
# SyntaxError (broken PNG chunks), DecompressionBombError (absurd sizes).
DECODE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)


class DatasetError(UserError, ValueError):
    """Training data that cannot be trained on as it is; the message names files and a fix."""


class BadImageError(UserError, OSError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


# PIL's modes of one-channel pictures deeper than 8 bits. PIL's convert("RGB") (detectron2's
# read_image, torchvision's loader) clips their values to 255: a 16-bit PNG comes out white.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def deep_mode(path):
    """The PIL mode of the picture at `path` if it is deeper than 8 bits (HIGH_DEPTH_MODES),
    else None (also when it cannot be opened: the reader names that). Reads the header only."""
    try:
        with Image.open(path) as image:
            return image.mode if image.mode in HIGH_DEPTH_MODES else None
    except DECODE_ERRORS:
        return None


def as_rgb(image, path):
    """A PIL image as 8-bit RGB, as PIL's convert("RGB") makes it, except that a 16-bit
    one-channel picture keeps its top 8 bits (what OpenCV reads from such a file); a
    floating-point one, or integers beyond 16 bits, have no one scale: BadImageError."""
    if image.mode not in HIGH_DEPTH_MODES:
        return image.convert("RGB")
    values = np.asarray(image)
    if image.mode == "F" or values.min() < 0 or values.max() > 65535:
        kind = "floating-point" if image.mode == "F" else "32-bit integer"
        raise BadImageError(f"{path}: is a {kind} picture (PIL mode {image.mode!r}), whose "
                            "values have no one 8-bit scale; convert it to 8 or 16 bits")
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L").convert("RGB")


EXIF_ORIENTATION = ExifTags.Base.Orientation  # 0x0112, detectron2's read_image's _EXIF_ORIENT
QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap width and height


def exif_turn_hint(path, record):
    """Why the picture at `path` has its record's size turned, or "": an EXIF orientation
    of a quarter turn (which detectron2's read_image applies) while the record holds the
    stored size, as annotation tools that ignore EXIF write it (their boxes are then in
    the stored pixels)."""
    try:
        with Image.open(path) as image:
            orientation, stored = image.getexif().get(EXIF_ORIENTATION), image.size
    except DECODE_ERRORS:
        return ""
    if orientation not in QUARTER_TURNS or stored != (record.get("width"), record.get("height")):
        return ""
    return (f"; its EXIF orientation {orientation} turns the stored {stored[0]}x{stored[1]} "
            "picture a quarter, and the annotations give the stored size, so their boxes "
            "are likely in the unturned pixels: remove the orientation tag (e.g. exiftool "
            "-Orientation= -overwrite_original FILE), or annotate the turned pictures")


def classes_difference(classes, other, names):
    """None when the two class name lists are equal, else what differs (`names`: what the
    two lists are, in the message)."""
    classes, other = list(classes), list(other)
    if classes == other:
        return None
    only = [sorted(set(a) - set(b))[:5] for a, b in ((classes, other), (other, classes))]
    if only[0] or only[1] or len(classes) != len(other):
        return (f"the classes differ (only in {names[0]}: {only[0]}, only in {names[1]}: "
                f"{only[1]})")
    i = next(i for i, (a, b) in enumerate(zip(classes, other)) if a != b)
    return (f"the classes are in another order (class {i} is {classes[i]!r} in {names[0]}, "
            f"{other[i]!r} in {names[1]})")


def check_stored_classes(source, stored, classes, what, fix):
    """The class names a checkpoint stores (`stored`; our trainings write them, other files
    have none) are those of the data it meets (`classes`, of `what`): else a DatasetError
    naming the file `source`, ending in `fix`. Either None: nothing to compare."""
    if not (isinstance(stored, (list, tuple)) and all(isinstance(c, str) for c in stored)
            and classes is not None):  # another program's "classes" entry: not ours to judge
        return
    problem = classes_difference(stored, classes, ("the checkpoint", what))
    if problem:
        raise DatasetError(f"{source}: {problem}; each label would mean another class. {fix}")


def _number(value):
    return f"{float(value):g}"


def format_box(bbox, mode):
    """'[30, 21, -10, 12] (XYWH_ABS)'."""
    return f"[{', '.join(_number(v) for v in bbox)}] ({BoxMode(mode).name})"


_IS_XYWH = {BoxMode.XYXY_ABS: False, BoxMode.XYWH_ABS: True}  # the modes that are checked


def box_problem(bbox, mode, image_size=None):
    """Why a box cannot be trained on, or None (also for relative / rotated boxes).

    Args:
        bbox: 4 numbers in `mode`.
        mode (BoxMode or int): XYXY_ABS or XYWH_ABS are checked; others are not.
        image_size (tuple or None): (height, width) of the image, when the dict has them.
    Returns:
        str or None: e.g. "width -10 is not positive", "lies wholly outside the 64x64 image".
    """
    is_xywh = _IS_XYWH.get(mode)
    if is_xywh is None:
        return None
    if len(bbox) != 4:
        return f"has {len(bbox)} numbers, not 4"
    x0, y0, a, b = (float(v) for v in bbox)
    width, height = (a, b) if is_xywh else (a - x0, b - y0)
    if not math.isfinite(x0 + y0 + width + height):
        return "is not finite"
    if width <= 0 or height <= 0:
        which, value = ("width", width) if width <= 0 else ("height", height)
        return f"{which} {_number(value)} is not positive"
    if image_size is not None:
        img_h, img_w = image_size
        if x0 + width <= 0 or y0 + height <= 0 or x0 >= img_w or y0 >= img_h:
            return f"lies wholly outside the {img_w}x{img_h} image"
    return None


def is_partly_outside(bbox, mode, image_size):
    """True if a checked (absolute) box reaches beyond its (height, width) image."""
    x0, y0, a, b = (float(v) for v in bbox)
    x1, y1 = (x0 + a, y0 + b) if _IS_XYWH[mode] else (a, b)
    return x0 < 0 or y0 < 0 or x1 > image_size[1] or y1 > image_size[0]


def _image_size(record):
    if "height" in record and "width" in record:
        return record["height"], record["width"]
    return None


def _checked(ann):
    """The annotations whose box is checked: not crowd (detectron2 does not train on those)."""
    return not ann.get("iscrowd", 0) and "bbox" in ann


def find_bad_boxes(dataset_dicts):
    """([(file_name, box, problem)], number of boxes checked, number partly outside)."""
    bad, checked, partly_outside = [], 0, 0
    for record in dataset_dicts:
        size = _image_size(record)
        for ann in record.get("annotations", ()):
            if not _checked(ann):
                continue
            mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
            checked += 1
            problem = box_problem(ann["bbox"], mode, size)
            if problem:
                bad.append((record.get("file_name"), format_box(ann["bbox"], mode), problem))
            elif size is not None and mode in _IS_XYWH:
                partly_outside += is_partly_outside(ann["bbox"], mode, size)
    return bad, checked, partly_outside


def _examples(bad):
    shown = "; ".join(f"{name}: bbox {box} {problem}" for name, box, problem in bad[:NUM_EXAMPLES])
    return shown + ("; ..." if len(bad) > NUM_EXAMPLES else "")


def without_bad_boxes(dataset_dicts):
    """The dicts with every annotation whose box_problem is not None left out (copies)."""
    kept = []
    for record in dataset_dicts:
        size = _image_size(record)
        anns = [ann for ann in record.get("annotations", ()) if not _checked(ann)
                or box_problem(ann["bbox"], ann.get("bbox_mode", BoxMode.XYWH_ABS), size) is None]
        kept.append(dict(record, annotations=anns) if "annotations" in record else record)
    return kept


def check_boxes(dataset_dicts, *, on_bad_box="skip", source="the training set"):
    """Boxes with no positive width / height, or wholly outside their image, per `on_bad_box`.

    Args:
        dataset_dicts (list[dict]): detectron2's dataset dicts.
        on_bad_box (str): "skip" -> leave such annotations out, logging how many and the
            first few; "error" -> raise DatasetError naming them.
        source (str): what the dicts are, for messages (e.g. "DATASETS.TRAIN=('x',)").
    Returns:
        list[dict]: the dicts (new dicts where an annotation was left out).
    """
    check_choice("DATALOADER.ON_BAD_BOX", on_bad_box, BAD_BOX_POLICIES)
    bad, checked, partly_outside = find_bad_boxes(dataset_dicts)
    if partly_outside:
        logger.info(f"{source}: {partly_outside} of {checked} boxes reach beyond their image; "
                    "they are clipped to it.")
    if not bad:
        logger.info(f"{source}: all {checked} boxes have a positive width and height inside "
                    "their image.")
        return dataset_dicts
    what = (f"{len(bad)} of {checked} boxes of {source} have no positive width / height or "
            "lie wholly outside their image")
    if on_bad_box == "error":
        raise DatasetError(f"{what}: {_examples(bad)}. Fix these annotations, or set "
                           "DATALOADER.ON_BAD_BOX skip to train without them.")
    logger.warning(f"{what}; they are left out (DATALOADER.ON_BAD_BOX='skip'): {_examples(bad)}")
    return without_bad_boxes(dataset_dicts)


def warn_unscorable_boxes(dataset_dicts, *, source="the test set"):
    """Log the test set's boxes that box_problem refuses: COCO evaluation's IoU of such a
    box with any detection is 0 (pycocotools' bbIou: no positive overlap, or no detection
    outside the image), so each is a missed object and the AP is lower than the model's."""
    bad, checked, _ = find_bad_boxes(dataset_dicts)
    if bad:
        logger.warning(f"{source}: {len(bad)} of {checked} boxes have no positive width / "
                       "height or lie wholly outside their image; no detection can match "
                       "them, so COCO evaluation counts each as a missed object (AP too "
                       f"low): {_examples(bad)}. Fix these annotations.")


def check_category_ids(dataset_dicts, num_classes, *, key, source="the training set"):
    """Every non-crowd category_id lies in [0, num_classes); else DatasetError naming `key`."""
    bad = [(record.get("file_name"), ann["category_id"]) for record in dataset_dicts
           for ann in record.get("annotations", ())
           if not ann.get("iscrowd", 0) and "category_id" in ann
           and not 0 <= ann["category_id"] < num_classes]
    if bad:
        shown = "; ".join(f"{name}: category_id {cid}" for name, cid in bad[:NUM_EXAMPLES])
        raise DatasetError(
            f"{len(bad)} annotations of {source} have a category_id outside [0, {num_classes}) "
            f"that {key}={num_classes} allows: {shown}. Set {key} to the number of classes, "
            "or register the dataset with contiguous category ids 0..K-1.")


def check_image_files(dataset_dicts, *, source="the training set"):
    """Every file_name exists; else one DatasetError with how many are missing and the first few."""
    paths = [r["file_name"] for r in dataset_dicts if "file_name" in r]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        shown = ", ".join(repr(path) for path in missing[:NUM_EXAMPLES])
        raise DatasetError(
            f"{len(missing)} of {len(paths)} images of {source} do not exist: {shown}"
            f"{', ...' if len(missing) > NUM_EXAMPLES else ''}. Check the image root the "
            "dataset was registered with, or remove these images from its annotations.")


class BadImageGuard:
    """A train mapper whose image decode failures name the file (DATALOADER.ON_BAD_IMAGE).

    "error" -> DatasetError naming the file; "skip" -> log the path (once per file and
    process) and return None, which detectron2's MapDataset answers by mapping another,
    random image of the set; `max_in_a_row` bad images in a row end the run with a
    DatasetError (no image left to try, or the folder is not the right one). An evaluation's
    mapper (`evaluating`) has "error" only: a left-out image would change the AP unseen.
    """

    def __init__(self, mapper, on_bad_image="error", max_in_a_row=100, evaluating=False):
        check_choice("DATALOADER.ON_BAD_IMAGE", on_bad_image, BAD_IMAGE_POLICIES)
        self.mapper, self.on_bad_image, self.max_in_a_row = mapper, on_bad_image, max_in_a_row
        self.evaluating = evaluating
        self._reported, self._in_a_row, self._shallow = set(), 0, set()

    def __call__(self, dataset_dict):
        path = dataset_dict.get("file_name")
        mode = deep_mode(path) if path and path not in self._shallow else None
        if path and mode is None:  # its header is read once per file and process
            self._shallow.add(path)
        if mode is not None:  # detectron2's read_image would give the model a white picture
            role = "Evaluation" if self.evaluating else "Training"
            # as_rgb: only integers have one 8-bit scale (their top 8 bits, as OpenCV's)
            note = "" if mode == "F" else (" (tools/predict.py reads such files by their top "
                                           "8 bits, as OpenCV)")
            raise DatasetError(
                f"{role} image {path!r} is a picture of more than 8 bits (PIL mode {mode!r}), "
                "which detectron2's reader turns white above 255. Convert the set to 8 bits "
                f"per channel{note}.")
        try:
            mapped = self.mapper(dataset_dict)
            self._in_a_row = 0
            return mapped
        except (*DECODE_ERRORS, SizeMismatchError) as e:  # size: the file is not the json's
            path, reason = dataset_dict.get("file_name"), f"{type(e).__name__}: {e}"
            if isinstance(e, SizeMismatchError):
                reason += exif_turn_hint(path, dataset_dict)
            if self.evaluating:
                raise DatasetError(
                    f"Evaluation image {path!r} cannot be read ({reason}). Replace the file, "
                    "or remove the image from the test set's annotations.") from e
            if self.on_bad_image == "error":
                raise DatasetError(
                    f"Training image {path!r} cannot be read ({reason}). Replace or remove "
                    "the file, or set DATALOADER.ON_BAD_IMAGE skip to train on the others.") from e
            self._in_a_row += 1
            if self._in_a_row >= self.max_in_a_row:
                raise DatasetError(
                    f"{self._in_a_row} training image(s) in a row cannot be read (the last: "
                    f"{path!r}: {reason}). Is the image folder of DATASETS.TRAIN the right one "
                    "and readable?") from e
            if path not in self._reported:
                self._reported.add(path)
                logger.warning(f"Skipping training image {path!r} that cannot be read ({reason}) "
                               "(DATALOADER.ON_BAD_IMAGE='skip').")
            return None
