"""The pictures a user asks for predictions on: files, folders, globs and videos.

`expand_inputs` turns tools/predict.py's --input values into file paths, in the order
given, and the inputs that name nothing; `read_inputs` yields their images (a video: its
frames, read by OpenCV) and reports each file that cannot be read, so that one bad file
costs a message, not the run.
"""
import glob
import os
from collections import namedtuple

import cv2
import numpy as np
# read_image's two steps (its EXIF step works around Pillow issue 3973)
from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy
from PIL import Image

from .checks import DECODE_ERRORS, HIGH_DEPTH_MODES, as_rgb
from ..utils.io import utf8_name

# What a folder or a glob contributes; a file named on its own is read whatever its name.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

# One picture to predict on: `image` HxWx3 uint8 BGR; `frame` None for an image file, else
# the frame's index in the video `path`.
Picture = namedtuple("Picture", "path frame image")


def resizes_to_nothing(transform, image):
    """Whether a resize `transform` gives `image` a side of 0 pixels (PIL then raises)."""
    h, w = image.shape[:2]
    return min(getattr(transform, "new_h", h), getattr(transform, "new_w", w)) < 1


def read_picture(path, format="BGR"):
    """HxWx3 uint8 in `format`, as detectron2's read_image reads it (PIL, EXIF orientation
    applied), except for 16-bit one-channel pictures, which keep their contrast (as_rgb:
    read_image makes them white); BadImageError for pictures of no one 8-bit scale. The file
    is opened once: read_image's two steps run on the picture opened here."""
    with Image.open(path) as image:
        image = _apply_exif_orientation(image)
        if image.mode not in HIGH_DEPTH_MODES or format not in ("RGB", "BGR"):
            return convert_PIL_to_numpy(image, format)
        rgb = np.asarray(as_rgb(image, path))
    return np.ascontiguousarray(rgb[:, :, ::-1]) if format == "BGR" else rgb


def is_video(path):
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _known(path):
    ext = os.path.splitext(path)[1].lower()
    return os.path.isfile(path) and ext in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def _expand_one(text):
    """(paths, None) or ([], why `text` names nothing)."""
    if os.path.isdir(text):
        found = sorted(p for p in (os.path.join(text, n) for n in os.listdir(text)) if _known(p))
        return (found, None) if found else ([], "folder holds no image or video "
                                            f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    if os.path.isfile(text):
        return [text], None
    if glob.has_magic(text):
        found = sorted(p for p in glob.glob(text, recursive=True) if _known(p))
        return (found, None) if found else ([], "matches no image or video file")
    if os.path.exists(text):  # /dev/null, a fifo, a socket
        return [], "is not a file or folder"
    return [], "does not exist"


def expand_inputs(inputs):
    """--input values -> (file paths in order, each once; [(input, reason)] for those naming none).

    Args:
        inputs (list[str]): files (any UTF-8 name; read as an image unless a video extension),
            folders (their images and videos, not recursive, sorted), globs (`**` recurses;
            files with an image or video extension, sorted).
    """
    paths, missing, seen = [], [], set()
    for text in inputs:
        found, why = _expand_one(os.path.expanduser(text))
        if why:
            missing.append((text, why))
        for path in found:
            key = os.path.realpath(path)
            if not utf8_name(path):  # OpenCV (drawing, videos) crashed on it: exit 139
                missing.append((path, "has a name that is not UTF-8, which OpenCV cannot "
                                      "open or write: rename it"))
            elif key not in seen:
                seen.add(key)
                paths.append(path)
    return paths, missing


def count_pictures(paths):
    """Images plus the frames the videos announce (OpenCV's count; an estimate for some codecs)."""
    total = 0
    for path in paths:
        if not is_video(path):
            total += 1
            continue
        capture = cv2.VideoCapture(path)
        total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        capture.release()
    return total


def _video_frames(path, skipped):
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        skipped.append((path, "cannot be opened as a video by OpenCV"))
        return
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Picture(path, index, frame)
            index += 1
    finally:
        capture.release()
    if index == 0:
        skipped.append((path, "is a video of no frame OpenCV can decode"))


def read_inputs(paths, skipped):
    """Yield a Picture per image file and per video frame; append (path, reason) to
    `skipped` for each file that cannot be read (and go on)."""
    for path in paths:
        if is_video(path):
            yield from _video_frames(path, skipped)
            continue
        try:
            image = read_picture(path)  # PIL, EXIF orientation applied, as detectron2
        except DECODE_ERRORS as e:
            skipped.append((path, f"cannot be read as an image ({type(e).__name__}: {e})"))
            continue
        yield Picture(path, None, image)
