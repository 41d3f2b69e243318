"""The digits demo set: a small real-content detection and classification dataset.

No COCO or ImageNet can be downloaded where this project is tested, so the demo set is
made from scikit-learn's 1797 real handwritten digits (see source.py). One build writes,
under `root`:

    annotations/instances_{train,val}.json   COCO instances, categories 1..10 = "0".."9";
                                             box, mask (RLE) and area of each digit's ink
    images/{train,val}/000001.jpg ...        detection images, digits on clutter
    classification/{train,val}/<k>/*.png     ImageNet-style folders, one digit per image
    manifest.json                            the DigitsSpec, counts and source fingerprint

The source digits are split once (stratified, fixed seed) into train and val; every
digit and every distractor in a val image, detection or classification, comes from the
val part. The build seed fixes every pixel: the same spec gives byte-identical files.
"""
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

from ..config.errors import is_whole
from .checks import DatasetError
from . import render
from .source import (
    DIGIT_CLASSES,
    load_source_digits,
    source_fingerprint,
    split_source,
)

SPLITS = ("train", "val")
# Bump when what a build writes changes: a manifest of another version is stale.
# 1: boxes; 2: + instance masks (same pixels as 1), area = mask pixels.
RENDER_VERSION = 2
MANIFEST = "manifest.json"
_OUTPUTS = ("annotations", "images", "classification", MANIFEST)  # all that a build owns
DIGITS_SOURCE = "sklearn.datasets.load_digits"  # the manifest's source name: ours, not a look-alike
BUILD_MARK = ".digits_build"  # written first: the folders here are a build's, even cut short
_DETECTION, _CLASSIFICATION = 0, 1  # first words of the per-image seeds


# A demo set's bounds: the renderer holds a few int64 arrays of an image's size (100000 px
# asked for 149 GiB), and every source digit is written at cls_image_size.
MAX_IMAGE_SIZE, MAX_CLS_SIZE = 4096, 512


@dataclass(frozen=True)
class DigitsSpec:
    """What a digits demo set is built from; a build with the same spec is byte-identical."""

    num_train: int = 2000  # detection images in train (>= 1)
    num_val: int = 300  # detection images in val (>= 1)
    image_size: int = 128  # detection images are image_size squared (digit_sizes[0]..4096)
    seed: int = 0  # >= 0; fixes every pixel. The source split does not depend on it
    digit_sizes: tuple = (12, 48)  # (min, max) digit height in px, drawn log-uniformly
    max_digits: int = 5  # digits per detection image: 1..max_digits (fewer when crowded)
    max_clutter: int = 6  # lines and rectangles per detection background: 0..max_clutter
    max_fragments: int = 3  # faint unannotated digit pieces per detection image: 0..max
    image_format: str = "jpg"  # detection images: "jpg" (quality 95) or "png"
    cls_image_size: int = 32  # classification images are cls_image_size squared (8..512)
    cls_copies: int = 1  # renderings of each source digit for classification; 0: none
    val_fraction: float = 0.2  # of each class's source digits kept for val (0 < x < 1)

    def __post_init__(self):
        object.__setattr__(self, "digit_sizes", tuple(self.digit_sizes))
        for name in ("num_train", "num_val", "max_digits"):
            _require(name, getattr(self, name), "an integer >= 1", is_whole(getattr(self, name), 1))
        for name in ("seed", "max_clutter", "max_fragments", "cls_copies"):
            _require(name, getattr(self, name), "an integer >= 0", is_whole(getattr(self, name), 0))
        low_high = self.digit_sizes
        _require("digit_sizes", low_high, "(min, max) integers with 4 <= min <= max",
                 len(low_high) == 2 and all(is_whole(s, 4) for s in low_high)
                 and low_high[0] <= low_high[1])
        _require("image_size", self.image_size, f"an integer from digit_sizes[0]={low_high[0]} "
                 f"(the smallest digit) to {MAX_IMAGE_SIZE}",
                 is_whole(self.image_size, low_high[0]) and self.image_size <= MAX_IMAGE_SIZE)
        fit = (self.image_size // 4) ** 2  # digits of 4 px (the least), side by side
        _require("max_digits", self.max_digits, f"at most {fit}, the most digits of 4 px "
                 f"that fit in an image of {self.image_size} px (each more tries a place for "
                 "it: a million ran for minutes per image)", self.max_digits <= fit)
        _require("cls_image_size", self.cls_image_size, f"an integer from 8 to {MAX_CLS_SIZE}",
                 is_whole(self.cls_image_size, 8) and self.cls_image_size <= MAX_CLS_SIZE)
        _require("image_format", self.image_format, "'jpg' or 'png'",
                 self.image_format in ("jpg", "png"))
        _require("val_fraction", self.val_fraction, "a number with 0 < x < 1",
                 isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1)

    def as_json(self):
        """The spec as it reads back from a manifest (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def _require(name, value, expected, ok):
    if not ok:
        raise ValueError(f"{name}={value!r} is not valid: expected {expected}.")


def detection_paths(root, split):
    """(COCO json file, image folder) of a split, as strings."""
    root = Path(root)
    return str(root / "annotations" / f"instances_{split}.json"), str(root / "images" / split)


class _Progress:
    """Prints 'label: done/total images, elapsed, ETA' every `every` images (0: never)."""

    def __init__(self, label, total, every):
        self.label, self.total, self.every = label, total, every
        self.start = time.perf_counter()

    def step(self, done):
        if self.every and (done % self.every == 0 or done == self.total):
            elapsed = time.perf_counter() - self.start
            eta = elapsed / done * (self.total - done)
            print(f"[digits] {self.label}: {done}/{self.total} images, "
                  f"{elapsed:.1f}s elapsed, ETA {eta:.1f}s", flush=True)


def glyph_shape(spec, rng, max_side):
    """(height, width): height log-uniform in digit_sizes (<= max_side), width 0.8-1.1x."""
    low, high = spec.digit_sizes[0], min(spec.digit_sizes[1], max_side)
    height = int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))
    width = int(np.clip(round(height * rng.uniform(0.8, 1.1)), 4, max_side))
    return height, width


def _apart(a, b, gap):
    """Whether [x, y, w, h] boxes a and b are at least `gap` pixels apart."""
    return (a[0] + a[2] + gap <= b[0] or b[0] + b[2] + gap <= a[0]
            or a[1] + a[3] + gap <= b[1] or b[1] + b[3] + gap <= a[1])


def find_spot(ink_shape, local_box, boxes, size, rng, tries=20, gap=2):
    """(x, y) for a glyph patch whose ink box keeps `gap` px from all boxes; None if none."""
    height, width = ink_shape
    for _ in range(tries):
        x, y = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
        box = [x + local_box[0], y + local_box[1], local_box[2], local_box[3]]
        if all(_apart(box, other, gap) for other in boxes):
            return x, y
    return None


def render_detection_image(spec, glyphs, pool, rng):
    """One detection image (uint8 RGB) and its digits as [(source index, [x, y, w, h], mask)].

    Clutter first, then faint fragments of pool digits, then 1..max_digits whole pool
    digits whose ink boxes keep 2 px apart; the first digit always fits. `mask` is the
    boolean (H, W) mask of the pixels the digit paints (render.ink_mask); the box is its
    tight box. Masks never overlap, since boxes do not.
    """
    size = spec.image_size
    image = render.cluttered_background(size, size, rng, spec.max_clutter)
    for _ in range(int(rng.integers(0, spec.max_fragments + 1))):
        ink = render.upscale_glyph(glyphs[rng.choice(pool)], *glyph_shape(spec, rng, size))
        render.paint_fragment(image, ink, rng)
    digits = []
    for _ in range(int(rng.integers(1, spec.max_digits + 1))):
        index = int(rng.choice(pool))
        ink = render.upscale_glyph(glyphs[index], *glyph_shape(spec, rng, size))
        local = render.ink_box(ink)
        spot = find_spot(ink.shape, local, [box for _, box, _ in digits], size, rng)
        if spot is not None:
            render.paint_digit(image, ink, *spot, rng)
            box = [spot[0] + local[0], spot[1] + local[1], local[2], local[3]]
            digits.append((index, box, render.ink_mask(ink, *spot, image.shape)))
    return render.to_uint8(image, rng, rng.uniform(0.0, 0.03)), digits


def render_classification_image(glyph, size, rng):
    """One digit filling 60-90% of a size x size mild background, uint8 RGB."""
    image = render.mild_background(size, size, rng)
    height = int(round(size * rng.uniform(0.6, 0.9)))
    width = int(np.clip(round(height * rng.uniform(0.8, 1.1)), 4, size))
    ink = render.upscale_glyph(glyph, height, width)
    x, y = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    render.paint_digit(image, ink, x, y, rng)
    return render.to_uint8(image, rng, rng.uniform(0.0, 0.02))


def write_image(path, image, quality=95):
    """Write an RGB uint8 image; JPEG at `quality`, PNG lossless."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if str(path).endswith(".jpg") else []
    if not cv2.imwrite(str(path), image[..., ::-1], params):
        raise OSError(f"could not write {path}")


def encode_mask(mask):
    """A boolean (H, W) mask as COCO compressed RLE: {"size": [H, W], "counts": str}.

    RLE rather than polygons: it holds the ink exactly, holes (0, 6, 8, 9) included.
    detectron2 reads it with INPUT.MASK_FORMAT "bitmask" (its default "polygon" cannot).
    """
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_categories():
    """COCO categories: id k + 1 is the digit k, named "k" (ids start at 1 as in COCO)."""
    return [{"id": k + 1, "name": name, "supercategory": "digit"}
            for k, name in enumerate(DIGIT_CLASSES)]


def build_detection_split(root, split, spec, glyphs, labels, pool, progress_every=500):
    """Render a split's images and write its COCO json; returns the COCO dict.

    Annotations carry `source_index`, the digit's index in load_digits(), for provenance;
    bbox is the tight ink box in pixels, segmentation the ink as compressed RLE
    (encode_mask) and area its pixel count, as COCO defines area for instances with masks.
    """
    json_file, image_root = detection_paths(root, split)
    Path(image_root).mkdir(parents=True, exist_ok=True)
    num_images = spec.num_train if split == "train" else spec.num_val
    images, annotations = [], []
    progress = _Progress(f"detection {split}", num_images, progress_every)
    for i in range(num_images):
        rng = np.random.default_rng([spec.seed, _DETECTION, SPLITS.index(split), i])
        image, digits = render_detection_image(spec, glyphs, pool, rng)
        file_name = f"{i + 1:06d}.{spec.image_format}"
        write_image(Path(image_root) / file_name, image)
        images.append({"id": i + 1, "file_name": file_name,
                       "width": spec.image_size, "height": spec.image_size})
        for index, box, mask in digits:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1,
                "category_id": int(labels[index]) + 1, "bbox": box,
                "segmentation": encode_mask(mask), "area": int(mask.sum()), "iscrowd": 0,
                "source_index": index})
        progress.step(i + 1)
    coco = {"info": {"description": f"resnext_det digits demo set, detection {split}",
                     "source": "sklearn.datasets.load_digits", "version": RENDER_VERSION,
                     "seed": spec.seed},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": coco_categories()}
    Path(json_file).parent.mkdir(parents=True, exist_ok=True)
    Path(json_file).write_text(json.dumps(coco))
    return coco


def build_classification_split(root, split, spec, glyphs, labels, pool, progress_every=500):
    """Write classification/<split>/<k>/<source index>_<copy>.png; returns the image count."""
    if spec.cls_copies == 0:
        return 0
    folder = Path(root) / "classification" / split
    for name in DIGIT_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    total = len(pool) * spec.cls_copies
    progress = _Progress(f"classification {split}", total, progress_every)
    for n, (index, copy) in enumerate((i, c) for i in pool for c in range(spec.cls_copies)):
        rng = np.random.default_rng([spec.seed, _CLASSIFICATION, SPLITS.index(split), index, copy])
        image = render_classification_image(glyphs[index], spec.cls_image_size, rng)
        write_image(folder / DIGIT_CLASSES[labels[index]] / f"{index:04d}_{copy}.png", image)
        progress.step(n + 1)
    return total


def clear_outputs(root):
    """Remove what a build wrote under root (and nothing else there).

    The folders are removed only when a build wrote them (its manifest or, for one that
    was interrupted, its mark is there): a folder of the user's own images/ or
    annotations/ is an error, never deleted.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"--output {str(root)!r} is a file; the digits set needs a folder")
    found = [name for name in _OUTPUTS if (root / name).exists()]
    if found and not ((root / BUILD_MARK).is_file() or read_manifest(root) is not None):
        raise DatasetError(
            f"{root} holds {', '.join(found)} that no digits build wrote (no {BUILD_MARK}, no "
            f"digits {MANIFEST}); a build would replace them. Choose an empty or new folder "
            "for the digits set (--output), or move them away.")
    for name in (*_OUTPUTS, BUILD_MARK):
        path = Path(root) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def build_digits_dataset(root, spec=None, progress_every=500):
    """Build the detection and classification sets under root, anew; returns the manifest.

    The manifest is written last, so an interrupted build reads as stale (`read_manifest`).
    """
    spec = DigitsSpec() if spec is None else spec
    clear_outputs(root)
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / BUILD_MARK).write_text("a digits build writes here "
                                         "(resnext_det/data/digits.py)\n")
    glyphs, labels = load_source_digits()
    pools = dict(zip(SPLITS, split_source(labels, spec.val_fraction)))
    counts = {}
    for split in SPLITS:
        coco = build_detection_split(root, split, spec, glyphs, labels, pools[split],
                                     progress_every)
        counts[split] = {
            "source_digits": len(pools[split]), "images": len(coco["images"]),
            "annotations": len(coco["annotations"]),
            "classification_images": build_classification_split(
                root, split, spec, glyphs, labels, pools[split], progress_every)}
    manifest = {"render_version": RENDER_VERSION, "spec": spec.as_json(), "counts": counts,
                "source": {"name": DIGITS_SOURCE, "num_digits": len(labels),
                           "sha256": source_fingerprint(glyphs, labels)}}
    (Path(root) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(root):
    """The digits manifest under root, or None when there is none (never built, or
    interrupted) or the file there is not one (damaged, or another program's manifest.json:
    it must name the digits source)."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, a folder, not JSON or not UTF-8
        return None
    source = manifest.get("source") if isinstance(manifest, dict) else None
    if not (isinstance(source, dict) and source.get("name") == DIGITS_SOURCE
            and "render_version" in manifest and "spec" in manifest):
        return None
    return manifest


def is_current(root, spec):
    """Whether root holds a complete build of `spec` by this RENDER_VERSION."""
    manifest = read_manifest(root)
    return (manifest is not None and manifest.get("render_version") == RENDER_VERSION
            and manifest.get("spec") == spec.as_json()
            and all(Path(p).exists() for s in SPLITS for p in detection_paths(root, s)))
