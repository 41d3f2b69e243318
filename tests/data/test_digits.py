"""The digits demo set: valid COCO, tight boxes on ink, deterministic, split by source digit."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools.coco import COCO

from resnext_det.data import (
    DIGIT_CLASSES,
    DigitsSpec,
    build_digits_dataset,
    detection_paths,
    ensure_digits_dataset,
    load_source_digits,
    read_manifest,
    register_digits,
    split_source,
)
from resnext_det.data import digits as digits_module
from resnext_det.data.render import ink_box, upscale_glyph
from tests.helpers import load_tool

TINY = dict(num_train=20, num_val=8, image_size=96, seed=0)
QUICK = dict(TINY, cls_copies=0)  # no classification set: 1797 fewer images to write


@pytest.fixture(scope="module")
def source():
    return load_source_digits()


@pytest.fixture(scope="module")
def source_sha256():
    """sha256 of scikit-learn's digits as installed, computed here from sklearn itself: the
    8x8 cell counts as uint8 bytes (row-major), then the labels as uint8 bytes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert np.array_equal(digits.images, np.round(digits.images))  # uint8 loses nothing
    digest = hashlib.sha256(digits.images.astype(np.uint8).tobytes())
    digest.update(digits.target.astype(np.uint8).tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny set (20 train / 8 val images of 96 px) and its manifest."""
    root = tmp_path_factory.mktemp("digits")
    return root, build_digits_dataset(root, DigitsSpec(**TINY), progress_every=0)


def load_coco(root, split):
    return json.loads(Path(detection_paths(root, split)[0]).read_text())


def test_source_is_pinned_and_split_stratified(source):
    glyphs, labels = source
    assert glyphs.shape == (1797, 8, 8) and glyphs.max() == 16 and set(labels) == set(range(10))
    train, val = split_source(labels)
    assert (len(train), len(val)) == (1438, 359)
    assert not set(train) & set(val) and len(set(train) | set(val)) == 1797
    for k in range(10):  # each class gives round(20%) of its digits to val
        assert np.sum(labels[val] == k) == round(np.sum(labels == k) * 0.2)


def test_manifest_records_source_and_counts(built, source_sha256):
    root, manifest = built
    assert manifest == read_manifest(root)
    assert manifest["source"]["sha256"] == source_sha256
    assert manifest["spec"]["num_train"] == 20 and manifest["spec"]["digit_sizes"] == [12, 48]
    assert manifest["counts"]["train"]["classification_images"] == 1438


@pytest.mark.parametrize("split,num_images", [("train", 20), ("val", 8)])
def test_coco_json_loads_with_pycocotools(built, split, num_images):
    root, manifest = built
    coco = COCO(detection_paths(root, split)[0])
    assert len(coco.getImgIds()) == num_images
    assert len(coco.getAnnIds()) == manifest["counts"][split]["annotations"] >= num_images
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DIGIT_CLASSES)
    assert all(len(coco.getAnnIds(imgIds=[i])) >= 1 for i in coco.getImgIds())
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)  # pycocotools decodes the RLE
        assert ann["iscrowd"] == 0 and mask.shape == (96, 96)
        assert 0 < ann["area"] == mask.sum() <= ann["bbox"][2] * ann["bbox"][3]


def _tight_box(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]


def test_masks_are_the_pixels_each_digit_paints(tmp_path, monkeypatch):
    """Each annotation's mask (decoded by pycocotools) is exactly the set of pixels that
    painting its digit changed, observed on the image array around each paint_digit call;
    its box is that set's tight box and its area that set's size. Masks never overlap."""
    painted = []  # per painted digit, in build order: the pixels the call changed

    def observed_paint_digit(image, ink, x, y, rng):
        before = image.copy()
        paint_digit(image, ink, x, y, rng)
        painted.append(np.any(image != before, axis=2))

    paint_digit = digits_module.render.paint_digit
    monkeypatch.setattr(digits_module.render, "paint_digit", observed_paint_digit)
    build_digits_dataset(tmp_path, DigitsSpec(**QUICK), progress_every=0)
    anns = [a for split in ("train", "val") for a in load_coco(tmp_path, split)["annotations"]]
    assert len(anns) == len(painted) > 28
    cocos = {split: COCO(detection_paths(tmp_path, split)[0]) for split in ("train", "val")}
    coco_of = [cocos[split] for split in ("train", "val")
               for _ in load_coco(tmp_path, split)["annotations"]]
    for ann, changed, coco in zip(anns, painted, coco_of):
        mask = coco.annToMask(ann).astype(bool)
        assert np.array_equal(mask, changed), ann["id"]
        assert ann["bbox"] == _tight_box(changed) and ann["area"] == changed.sum()
    for split, coco in cocos.items():
        for image_id in coco.getImgIds():
            masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
            assert np.sum(masks, axis=0).max() == 1


def ring_median(image, box, width=2):
    """Per-channel median of the pixels in a `width`-px ring just outside box."""
    x, y, w, h = box
    outer = np.zeros(image.shape[:2], bool)
    outer[max(0, y - width):y + h + width, max(0, x - width):x + w + width] = True
    outer[y:y + h, x:x + w] = False
    return np.median(image[outer], axis=0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_lie_in_the_image_on_ink(built, split):
    """Each box is inside the image, and holds pixels far from the background around it.

    Digits are painted >= 0.36 (0.45 contrast x 0.8 opacity) away from the mean under
    them, so some pixel in the box differs from the surrounding ring by > 60 / 255.
    """
    root, _ = built
    coco = load_coco(root, split)
    images = {im["id"]: im for im in coco["images"]}
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= im["width"] and y + h <= im["height"]
        pixels = np.asarray(Image.open(Path(detection_paths(root, split)[1]) / im["file_name"]))
        assert pixels.shape == (im["height"], im["width"], 3)
        crop = pixels[y:y + h, x:x + w].astype(np.float32)
        assert np.abs(crop - ring_median(pixels, ann["bbox"])).max() > 60


def test_ink_box_is_tight(source):
    glyphs, _ = source
    for index, (height, width) in zip(range(0, 1797, 97), [(12, 10), (31, 30), (48, 53)] * 7):
        ink = upscale_glyph(glyphs[index], height, width)
        x, y, w, h = ink_box(ink)
        assert np.count_nonzero(ink) == np.count_nonzero(ink[y:y + h, x:x + w]) > 0  # all inside
        edges = ink[y, x:x + w], ink[y + h - 1, x:x + w], ink[y:y + h, x], ink[y:y + h, x + w - 1]
        assert all(edge.max() > 0 for edge in edges)  # and ink on each of its edges


def test_splits_use_disjoint_source_digits(built, source):
    root, _ = built
    train_pool, val_pool = (set(p.tolist()) for p in split_source(source[1]))
    used = {split: {a["source_index"] for a in load_coco(root, split)["annotations"]}
            for split in ("train", "val")}
    assert used["train"] <= train_pool and used["val"] <= val_pool
    for split, pool in (("train", train_pool), ("val", val_pool)):
        files = (Path(root) / "classification" / split).glob("*/*.png")
        assert {int(f.name.split("_")[0]) for f in files} == pool


def test_same_seed_is_byte_identical_other_seed_differs(built, tmp_path):
    root, _ = built
    build_digits_dataset(tmp_path / "same", DigitsSpec(**QUICK), progress_every=0)
    build_digits_dataset(tmp_path / "other", DigitsSpec(**{**QUICK, "seed": 1}), progress_every=0)
    for split in ("train", "val"):
        reference = Path(detection_paths(root, split)[0]).read_bytes()
        assert Path(detection_paths(tmp_path / "same", split)[0]).read_bytes() == reference
        assert Path(detection_paths(tmp_path / "other", split)[0]).read_bytes() != reference
    image = Path("images/val/000001.jpg")
    assert (tmp_path / "same" / image).read_bytes() == (root / image).read_bytes()


def test_classification_folders(built, source):
    root, _ = built
    _, labels = source
    for split, count in (("train", 1438), ("val", 359)):
        folder = Path(root) / "classification" / split
        assert sorted(p.name for p in folder.iterdir()) == list(DIGIT_CLASSES)
        files = sorted(folder.glob("*/*.png"))
        assert len(files) == count
        for path in files[::50]:
            assert path.parent.name == str(labels[int(path.name.split("_")[0])])
            with Image.open(path) as image:
                assert image.size == (32, 32) and image.mode == "RGB"


def test_register_gives_detectron2_dicts(built):
    root, manifest = built
    names = ("test_digits_train", "test_digits_val")
    assert register_digits(root, names) == names
    assert register_digits(root, names) == names  # idempotent
    for name, split in zip(names, ("train", "val")):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == manifest["counts"][split]["images"]
        assert sum(len(d["annotations"]) for d in dicts) == manifest["counts"][split]["annotations"]
        assert {a["category_id"] for d in dicts for a in d["annotations"]} <= set(range(10))
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(DIGIT_CLASSES) and meta.evaluator_type == "coco"
        assert meta.json_file == detection_paths(Path(root).resolve(), split)[0]


def test_register_repoints_a_name_at_another_root(built, tmp_path):
    root, _ = built
    names = ("test_repoint_train", "test_repoint_val")
    register_digits(root, names)
    register_digits(tmp_path, names)
    assert MetadataCatalog.get(names[1]).image_root == str(tmp_path.resolve() / "images" / "val")


def test_ensure_builds_once_and_rebuilds_on_new_spec(tmp_path, monkeypatch):
    names = ("test_ensure_train", "test_ensure_val")
    ensure_digits_dataset(tmp_path, names, progress_every=0, **{**QUICK, "num_train": 4})
    assert len(DatasetCatalog.get(names[0])) == 4

    def no_build(*args):
        raise AssertionError("rebuilt an up-to-date set")

    monkeypatch.setattr("resnext_det.data.register.build_digits_dataset", no_build)
    ensure_digits_dataset(tmp_path, names, progress_every=0, **{**QUICK, "num_train": 4})
    monkeypatch.undo()
    ensure_digits_dataset(tmp_path, names, progress_every=0, **{**QUICK, "num_train": 5})
    assert read_manifest(tmp_path)["counts"]["train"]["images"] == 5
    assert len(list((tmp_path / "images" / "train").iterdir())) == 5  # old files removed


@pytest.mark.parametrize("fields,pattern", [
    ({"num_train": 0}, r"num_train=0 is not valid: expected an integer >= 1"),
    ({"num_val": 2.5}, r"num_val=2.5 "),
    ({"image_size": 10}, r"image_size=10 .*digit_sizes\[0\]=12"),
    ({"image_size": 100000}, r"image_size=100000 .*to 4096"),  # was a MemoryError: 149 GiB
    ({"cls_image_size": 5000}, r"cls_image_size=5000 .*from 8 to 512"),  # 1797 files of 25 Mpx
    ({"digit_sizes": (30, 20)}, r"digit_sizes=\(30, 20\) .*min <= max"),
    ({"seed": -1}, r"seed=-1 "),
    ({"cls_copies": -1}, r"cls_copies=-1 .*>= 0"),
    ({"image_format": "gif"}, r"image_format='gif' .*'jpg' or 'png'"),
    ({"val_fraction": 1.0}, r"val_fraction=1.0 "),
    ({"max_digits": 10 ** 6}, r"max_digits=1000000 .*at most 576, the most digits"),  # minutes per image
])
def test_bad_spec_names_the_argument(tmp_path, fields, pattern):
    with pytest.raises(ValueError, match=pattern):
        ensure_digits_dataset(tmp_path / "never", **{**TINY, **fields})
    assert not (tmp_path / "never").exists()


def test_register_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError, match="names='digits' is not valid"):
        register_digits(tmp_path, "digits")


def test_tool_builds_then_skips(tmp_path, capsys):
    main = load_tool("build_digits_dataset").main
    args = ["--output", str(tmp_path), "--num-train", "3", "--num-val", "2", "--image-size",
            "64", "--progress-every", "0", "--image-format", "png", "--cls-copies", "0"]
    main(args)
    assert (tmp_path / "images" / "train" / "000003.png").is_file()
    main(args)
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--image-size", "8"])
    assert exit_info.value.code == 2 and "image_size=8" in capsys.readouterr().err


def test_digit_sizes_are_clamped_to_small_images(source):
    """image_size between the digit sizes: every digit still fits in the image."""
    glyphs, labels = source
    spec = DigitsSpec(num_train=1, num_val=1, image_size=20)
    for i in range(30):
        image, digits = digits_module.render_detection_image(
            spec, glyphs, np.arange(len(labels)), np.random.default_rng(i))
        assert image.shape == (20, 20, 3) and 1 <= len(digits)
        assert all(x + w <= 20 and y + h <= 20 for _, (x, y, w, h), _ in digits)
        assert all(mask.shape == (20, 20) and _tight_box(mask) == box for _, box, mask in digits)


def test_a_build_never_deletes_folders_it_did_not_write(tmp_path, capsys, monkeypatch):
    """--output a folder of the user's own images/ and annotations/: an error, both kept.
    A build cut short (no manifest yet) is its own: the next build replaces it."""
    main = load_tool("build_digits_dataset").main
    args = ["--num-train", "2", "--num-val", "1", "--image-size", "64", "--progress-every",
            "0", "--cls-copies", "0"]
    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "holiday.jpg").write_bytes(b"my picture")
    (mine / "annotations").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(mine), *args])
    assert exit_info.value.code == 2
    assert "holds annotations, images that no digits build wrote" in capsys.readouterr().err
    assert (mine / "images" / "holiday.jpg").read_bytes() == b"my picture"
    # a manifest.json of another program (or a damaged one) is no digits build's
    for text in ('{"name": "my web app"}', "{", "[1]", '{"source": "x"}'):
        (mine / "manifest.json").write_text(text)
        with pytest.raises(SystemExit) as exit_info:
            main(["--output", str(mine), *args])
        assert exit_info.value.code == 2 and "no digits build wrote" in capsys.readouterr().err
        assert (mine / "images" / "holiday.jpg").read_bytes() == b"my picture"
        assert read_manifest(mine) is None
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(SystemExit):
        main(["--output", str(a_file), *args])
    assert "is a file" in capsys.readouterr().err

    cut = tmp_path / "cut"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(digits_module, "build_classification_split", killed)
    with pytest.raises(KeyboardInterrupt):
        main(["--output", str(cut), *args])
    monkeypatch.undo()
    assert (cut / "images").is_dir() and read_manifest(cut) is None
    main(["--output", str(cut), *args])
    assert read_manifest(cut)["counts"]["train"]["images"] == 2
