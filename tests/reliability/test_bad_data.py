"""Bad detection training data: named before the first iteration, or skipped as configured."""
import json
import uuid
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances
from PIL import Image

import resnext_det
from resnext_det.config.errors import ConfigError
from resnext_det.data import ensure_digits_dataset
from resnext_det.data.checks import DatasetError
from resnext_det.engine import Trainer
from resnext_det.engine.checks import check_test_images, checked_train_dicts
from resnext_det.errors import UserError
from tests.helpers import captured, pycocotools_stats

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")
SIZE = 64  # every image is SIZE x SIZE
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNEXT.TEMPLATE", "X50_2x2d",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ROI_HEADS.NUM_CLASSES", 2,
    "SOLVER.IMS_PER_BATCH", 1, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", 100, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", "()",
    "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", SIZE,
    "DATALOADER.NUM_WORKERS", 0,
]
GOOD = [10, 10, 20, 20]  # XYWH inside a 64x64 image


def write_coco(folder, images, classes=("a", "b")):
    """A COCO json + JPEGs under `folder`, registered under a fresh name; returns the name.

    `images`: {file name: [XYWH box, ...]}, each box of class 0.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    for image_id, (file_name, boxes) in enumerate(images.items(), start=1):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / file_name, quality=90)
        coco["images"].append({"id": image_id, "file_name": file_name, "width": SIZE,
                               "height": SIZE})
        for box in boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "bbox": box, "area": abs(box[2] * box[3]),
                                        "category_id": 1, "iscrowd": 0})
    json_file = folder / "train.json"
    json_file.write_text(json.dumps(coco))
    name = f"bad_data_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(folder))
    return name


def truncate(path):
    """Cut a JPEG to half its bytes: PIL opens it, then fails to decode its pixels."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_cfg(name, *overrides, output_dir="output"):
    cfg = get_cfg()
    resnext_det.add_resnext_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list([*map(str, TINY), "DATASETS.TRAIN", f"('{name}',)", "OUTPUT_DIR",
                         str(output_dir), *map(str, overrides)])
    return cfg


def test_negative_width_is_an_error_naming_file_and_box(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD, [30, 21, -10, 12]], "img1.jpg": [GOOD]})
    with pytest.raises(DatasetError) as info:
        checked_train_dicts(make_cfg(name, "DATALOADER.ON_BAD_BOX", "error"))
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert "1 of 3 boxes" in msg and "img0.jpg" in msg
    assert "[30, 21, -10, 12] (XYWH_ABS) width -10 is not positive" in msg
    assert "DATALOADER.ON_BAD_BOX skip" in msg


def test_datasets_naming_their_classes_differently_are_named(tmp_path):
    """Two training sets whose category ids mean other classes: detectron2's
    get_detection_dataset_dicts stopped on a bare ValueError."""
    first = write_coco(tmp_path / "first", {"img0.jpg": [GOOD]})
    second = write_coco(tmp_path / "second", {"img0.jpg": [GOOD]}, classes=("b", "a"))
    # first the check, on sets not loaded yet (their thing_classes are set as they load)
    with pytest.raises(DatasetError) as info:
        checked_train_dicts(make_cfg(first, "DATASETS.TRAIN", f"('{first}', '{second}')"))
    with pytest.raises(ValueError, match="Datasets have different metadata 'thing_classes'"):
        get_detection_dataset_dicts([first, second])
    assert (f"DATASETS.TRAIN=('{first}', '{second}'): '{second}' names its classes ['b', 'a'], "
            f"'{first}' names them ['a', 'b']") in str(info.value)
    assert "check_consistency" not in str(info.value)  # no YAML key turns the check off


def test_mask_training_on_objects_without_masks_is_named(tmp_path):
    """MODEL.MASK_ON on a json without masks stopped the first iteration with detectron2's
    "Cannot find field 'gt_masks' in the given Instances!"; the same json trains boxes."""
    name = write_coco(tmp_path, {"img0.jpg": [GOOD], "img1.jpg": [GOOD]})
    with pytest.raises(DatasetError, match=r"img0.jpg' has an object without a mask .*"
                       r"MODEL.MASK_ON False"):
        checked_train_dicts(make_cfg(name, "MODEL.MASK_ON", True))
    assert len(checked_train_dicts(make_cfg(name))) == 2


def test_mask_evaluation_on_objects_without_masks_is_announced(tmp_path):
    """A box-only DATASETS.TEST for a MODEL.MASK_ON model: its masks are not scored
    (COCOMetricsEvaluator); said before the run, not only after it."""
    name = write_coco(tmp_path, {"img0.jpg": [GOOD], "img1.jpg": [GOOD, [30, 30, 10, 10]]})
    logs = {}
    for mask_on in (True, False):
        with captured("resnext_det.engine.checks") as logs[mask_on]:
            check_test_images(make_cfg(name, "DATASETS.TEST", f"('{name}',)",
                                       "MODEL.MASK_ON", mask_on))
    assert logs[True] == [f"DATASETS.TEST {name!r}: 3 of its 3 objects have no 'segmentation', "
                          "so its masks will not be scored (no segm AP), only its boxes."]
    assert logs[False] == []


def test_negative_width_is_skipped_and_counted(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD, [30, 21, -10, 12]], "img1.jpg": [GOOD]})
    with captured("resnext_det.data.checks") as log:
        dicts = checked_train_dicts(make_cfg(name))  # ON_BAD_BOX defaults to "skip"
    assert [len(d["annotations"]) for d in dicts] == [1, 1]
    assert [a["bbox"] for d in dicts for a in d["annotations"]] == [GOOD, GOOD]
    warning = next(m for m in log if "left out" in m)
    assert "1 of 3 boxes" in warning and "img0.jpg: bbox [30, 21, -10, 12]" in warning


def test_box_wholly_outside_is_named_and_partly_outside_is_clipped(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD, [70, 10, 8, 8]],
                                 "img1.jpg": [[50, 50, 30, 30], [-4, 20, 10, 10]]})
    with pytest.raises(DatasetError, match=r"img0.jpg: bbox \[70, 10, 8, 8\] \(XYWH_ABS\) lies "
                       r"wholly outside the 64x64 image"):
        checked_train_dicts(make_cfg(name, "DATALOADER.ON_BAD_BOX", "error"))
    with captured("resnext_det.data.checks") as log:
        dicts = checked_train_dicts(make_cfg(name))
    assert [len(d["annotations"]) for d in dicts] == [1, 2]
    assert any("2 of 4 boxes reach beyond their image; they are clipped" in m for m in log)


def test_test_boxes_no_detection_can_match_are_logged(tmp_path):
    """pycocotools scores even the test set's own boxes, clipped to the image as detectron2
    clips detections, below 100 AP when a box has no width or lies outside the image."""
    from detectron2.structures import Boxes, BoxMode

    name = write_coco(tmp_path, {"img0.jpg": [GOOD, [5, 5, 0, 9]],
                                 "img1.jpg": [[30, 30, 10, 10], [70, 10, 8, 8]]})
    results = []
    for record in DatasetCatalog.get(name):
        for ann in record["annotations"]:
            box = Boxes(BoxMode.convert(np.array([ann["bbox"]], float), BoxMode.XYWH_ABS,
                                        BoxMode.XYXY_ABS))
            box.clip((record["height"], record["width"]))
            xywh = BoxMode.convert(box.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            results.append({"image_id": record["image_id"], "category_id": 1,
                            "bbox": xywh[0].tolist(), "score": 1.0})
    assert pycocotools_stats(tmp_path / "train.json", results)["AP"] < 100
    with captured("resnext_det.data.checks") as log:
        check_test_images(make_cfg(name, "DATASETS.TEST", f"('{name}',)"))
    assert any(f"DATASETS.TEST {name!r}: 2 of 4 boxes have no positive width / height or lie "
               "wholly outside their image; no detection can match them" in m
               and "img0.jpg: bbox [5, 5, 0, 9] (XYWH_ABS) width 0 is not positive" in m
               for m in log), log
    good = write_coco(tmp_path / "good", {"img0.jpg": [GOOD]})
    with captured("resnext_det.data.checks") as log:
        check_test_images(make_cfg(good, "DATASETS.TEST", f"('{good}',)"))
    assert not log


def test_image_left_without_boxes_is_dropped(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [[5, 5, 0, 9]], "img1.jpg": [GOOD]})
    dicts = checked_train_dicts(make_cfg(name))
    assert [Path(d["file_name"]).name for d in dicts] == ["img1.jpg"]


@pytest.mark.parametrize("arch, key", [("GeneralizedRCNN", "MODEL.ROI_HEADS.NUM_CLASSES"),
                                       ("RetinaNet", "MODEL.RETINANET.NUM_CLASSES")])
def test_num_classes_mismatch_names_both_keys(tmp_path, arch, key):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD]}, classes=("a", "b", "c"))
    cfg = make_cfg(name, "MODEL.META_ARCHITECTURE", arch, key, 2)
    with pytest.raises(DatasetError) as info:
        checked_train_dicts(cfg)
    msg = str(info.value)
    assert f"{key}=2 does not match DATASETS.TRAIN" in msg
    assert f"{name!r} has 3 classes (thing_classes ['a', 'b', 'c'])" in msg
    assert f"Set {key} 3" in msg


def test_missing_images_are_listed_before_training(tmp_path):
    name = write_coco(tmp_path, {f"img{i}.jpg": [GOOD] for i in range(8)})
    for i in range(1, 8):
        (tmp_path / f"img{i}.jpg").unlink()
    with pytest.raises(DatasetError) as info:
        checked_train_dicts(make_cfg(name))
    msg = str(info.value)
    assert f"7 of 8 images of DATASETS.TRAIN=('{name}',) do not exist" in msg
    assert str(tmp_path / "img1.jpg") in msg and "img6.jpg" not in msg and ", ..." in msg


@pytest.mark.parametrize("key, value", [("DATALOADER.ON_BAD_BOX", "drop"),
                                        ("DATALOADER.ON_BAD_IMAGE", "ignore")])
def test_bad_policy_value_names_key_and_choices(tmp_path, key, value):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD]})
    with pytest.raises(ConfigError, match=rf"{key}='{value}' is not valid: expected one of \["):
        Trainer.build_train_loader(make_cfg(name, key, value))


def test_truncated_image_is_an_error_naming_the_file(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD]})
    truncate(tmp_path / "img0.jpg")
    loader = Trainer.build_train_loader(make_cfg(name))  # ON_BAD_IMAGE defaults to "error"
    with pytest.raises(DatasetError) as info:
        next(iter(loader))
    # a DataLoader worker's error reaches the main process as type(error)(its message)
    assert str(type(info.value)(str(info.value))) == str(info.value)
    msg = str(info.value)
    assert f"Training image '{tmp_path / 'img0.jpg'}' cannot be read (OSError: image file " \
           "is truncated" in msg
    assert "DATALOADER.ON_BAD_IMAGE skip" in msg


def test_truncated_image_is_skipped_and_logged(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD], "img1.jpg": [GOOD]})
    truncate(tmp_path / "img0.jpg")
    loader = Trainer.build_train_loader(make_cfg(name, "DATALOADER.ON_BAD_IMAGE", "skip"))
    with captured("resnext_det.data.checks") as log:
        batches = [batch for _, batch in zip(range(6), loader)]
    assert {Path(b[0]["file_name"]).name for b in batches} == {"img1.jpg"}
    skipped = [m for m in log if "Skipping training image" in m]
    assert len(skipped) == 1 and str(tmp_path / "img0.jpg") in skipped[0]


def test_image_of_another_size_than_its_record_is_named_or_skipped(tmp_path):
    """detectron2's check_image_size raised a SizeMismatchError past the policy."""
    name = write_coco(tmp_path, {"img0.jpg": [GOOD], "img1.jpg": [GOOD]})
    Image.fromarray(np.zeros((SIZE // 2, SIZE, 3), np.uint8)).save(tmp_path / "img0.jpg")
    with pytest.raises(DatasetError, match=r"img0\.jpg' cannot be read \(SizeMismatchError"):
        for _, _batch in zip(range(6), Trainer.build_train_loader(make_cfg(name))):
            pass
    loader = Trainer.build_train_loader(make_cfg(name, "DATALOADER.ON_BAD_IMAGE", "skip"))
    with captured("resnext_det.data.checks") as log:
        batches = [batch for _, batch in zip(range(6), loader)]
    assert {Path(b[0]["file_name"]).name for b in batches} == {"img1.jpg"}
    assert any("img0.jpg" in m and "SizeMismatchError" in m for m in log)


def test_a_phone_picture_annotated_unturned_names_its_exif_orientation(tmp_path):
    """A JPEG whose EXIF orientation 6 turns it (detectron2's read_image applies it), listed
    at its stored size: the error says so, and how to make the pixels read those annotated.
    Listed at its turned size, detectron2 reads it without error (and no hint is given)."""
    from detectron2.data import DatasetMapper
    from detectron2.data.detection_utils import read_image

    from resnext_det.data.checks import BadImageGuard

    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(path, exif=exif.tobytes())
    assert read_image(str(path)).shape[:2] == (48, 32)  # turned: 32 wide, 48 high
    guard = BadImageGuard(DatasetMapper(is_train=False, augmentations=[], image_format="BGR"),
                          evaluating=True)
    stored = {"file_name": str(path), "image_id": 1, "width": 48, "height": 32}
    with pytest.raises(DatasetError, match=r"SizeMismatchError: .*; its EXIF orientation 6 "
                       r"turns the stored 48x32 picture a quarter, .* remove the orientation "
                       r"tag \(e\.g\. exiftool -Orientation="):
        guard(dict(stored))
    assert guard(dict(stored, width=32, height=48))["image"].shape[1:] == (48, 32)
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(path)  # no EXIF: another size
    with pytest.raises(DatasetError) as error:
        guard(dict(stored, width=32, height=48))
    assert "SizeMismatchError" in str(error.value) and "EXIF" not in str(error.value)


def test_skip_with_no_readable_image_ends_instead_of_looping(tmp_path):
    """detectron2's MapDataset retries a skipped image with another one until none is left,
    then fails with a bare "Sample larger than population"; the guard ends the run first."""
    name = write_coco(tmp_path, {"img0.jpg": [GOOD], "img1.jpg": [GOOD]})
    truncate(tmp_path / "img0.jpg")
    truncate(tmp_path / "img1.jpg")
    loader = Trainer.build_train_loader(make_cfg(name, "DATALOADER.ON_BAD_IMAGE", "skip"))
    with captured("resnext_det.data.checks"), pytest.raises(
            DatasetError, match=r"2 training image\(s\) in a row cannot be read \(the last: "
                                r"'.*img[01]\.jpg'"):
        next(iter(loader))


def test_annotations_are_loaded_once(tmp_path):
    name = write_coco(tmp_path, {"img0.jpg": [GOOD]})
    calls = []
    load = DatasetCatalog.get(name)  # the dicts, loaded here once

    def counting_load():
        calls.append(1)
        return load

    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, counting_load)
    Trainer.build_train_loader(make_cfg(name, "DATALOADER.SAMPLER_TRAIN",
                                        "RepeatFactorTrainingSampler"))
    assert len(calls) == 1


@pytest.mark.parametrize("sampler, keys", [
    ("RandomSubsetTrainingSampler", ["DATALOADER.RANDOM_SUBSET_RATIO", 0.5]),
    ("WeightedTrainingSampler", ["DATASETS.TRAIN_REPEAT_FACTOR", "[['{name}', 2.0]]"]),
])
def test_the_samplers_whose_keys_get_cfg_lacks_train(tmp_path, sampler, keys):
    """detectron2's loader reads DATALOADER.RANDOM_SUBSET_RATIO / DATASETS.TRAIN_REPEAT_FACTOR,
    which its get_cfg() lacks (a YAML file could not set them: an AttributeError). They are
    detectron2's samplers, built by its loader from these keys."""
    from detectron2.data.samplers import RandomSubsetTrainingSampler, RepeatFactorTrainingSampler

    name = write_coco(tmp_path, {f"img{i}.jpg": [GOOD] for i in range(4)})
    keys = [str(k).format(name=name) for k in keys]
    cfg = make_cfg(name, "DATALOADER.SAMPLER_TRAIN", sampler, *keys)
    loader = Trainer.build_train_loader(cfg)
    found = loader.dataset.sampler if hasattr(loader.dataset, "sampler") else None
    expected = (RandomSubsetTrainingSampler if sampler.startswith("Random")
                else RepeatFactorTrainingSampler)
    assert isinstance(found, expected), type(found)
    if expected is RandomSubsetTrainingSampler:
        assert found._size_subset == 2
    assert len(next(iter(loader))) == cfg.SOLVER.IMS_PER_BATCH


def test_keypoint_training_on_a_set_without_keypoint_metadata_is_named(tmp_path):
    """A json registered as --dataset registers it (register_coco_instances), without
    keypoint_names / keypoint_flip_map: detectron2's DatasetMapper stopped a MODEL.KEYPOINT_ON
    training on an AttributeError; a head of another keypoint count, at the first iteration."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import create_keypoint_hflip_indices

    from resnext_det.engine.checks import check_datasets

    name = write_coco(tmp_path, {"img0.jpg": [GOOD]})
    with pytest.raises(AttributeError):
        create_keypoint_hflip_indices([name])
    cfg = make_cfg(name, "MODEL.KEYPOINT_ON", True)
    with pytest.raises(DatasetError, match=rf"DATASETS.TRAIN: dataset '{name}' has no "
                       r"keypoint_names and keypoint_flip_map .* or train boxes only"):
        check_datasets(cfg)
    MetadataCatalog.get(name).set(keypoint_names=["a", "b"], keypoint_flip_map=[])
    assert len(create_keypoint_hflip_indices([name])) == 2
    with pytest.raises(ConfigError, match=r"NUM_KEYPOINTS=17 is not valid: expected 2, the "
                       rf"keypoints of DATASETS.TRAIN '{name}' \(\['a', 'b'\]\)"):
        check_datasets(cfg)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 2
    check_datasets(cfg)


def test_a_subset_ratio_that_leaves_no_image_is_named(tmp_path):
    """RandomSubsetTrainingSampler samples from int(images x ratio) images: detectron2 stops
    on a bare AssertionError when that is 0 (a ratio of 0.1 of 4 images)."""
    from detectron2.data.samplers import RandomSubsetTrainingSampler

    name = write_coco(tmp_path, {f"img{i}.jpg": [GOOD] for i in range(4)})
    with pytest.raises(AssertionError):
        RandomSubsetTrainingSampler(4, 0.1, seed_shuffle=0, seed_subset=0)
    cfg = make_cfg(name, "DATALOADER.SAMPLER_TRAIN", "RandomSubsetTrainingSampler",
                   "DATALOADER.RANDOM_SUBSET_RATIO", 0.1)
    with pytest.raises(ConfigError, match=r"DATALOADER.RANDOM_SUBSET_RATIO=0.1 is not valid: "
                       r"expected at least 1/4. DATASETS.TRAIN has 4 training images"):
        Trainer.build_train_loader(cfg)
    cfg.DATALOADER.RANDOM_SUBSET_RATIO = 0.25  # one image
    assert Trainer.build_train_loader(cfg).dataset.sampler._size_subset == 1


def test_training_finishes_with_a_skipped_box_and_a_skipped_image(tmp_path):
    name = write_coco(tmp_path / "data", {"img0.jpg": [GOOD, [30, 21, -10, 12]],
                                          "img1.jpg": [GOOD, [8, 30, 16, 12]], "img2.jpg": [GOOD]})
    truncate(tmp_path / "data/img2.jpg")
    cfg = make_cfg(name, "DATALOADER.ON_BAD_IMAGE", "skip", "SOLVER.MAX_ITER", 3,
                   output_dir=tmp_path / "out")
    with captured("resnext_det.data.checks") as log:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    assert trainer.iter == 3 and (tmp_path / "out/model_final.pth").is_file()
    assert any("1 of 5 boxes" in m and "left out" in m for m in log)
    assert any("Skipping training image" in m and "img2.jpg" in m for m in log)


def test_digits_set_passes_unchanged(tmp_path):
    """The demo set's boxes (its sizes, 100 images) are all valid: none skipped or clipped."""
    names = ("bad_data_digits_train", "bad_data_digits_val")
    ensure_digits_dataset(tmp_path / "digits", names=names, num_train=100, num_val=1, cls_copies=0, progress_every=0)
    cfg = make_cfg(names[0], "MODEL.ROI_HEADS.NUM_CLASSES", 10,
                   "DATALOADER.ON_BAD_BOX", "error")
    with captured("resnext_det.data.checks") as log:
        dicts = checked_train_dicts(cfg)
    assert len(dicts) == 100
    assert any("boxes have a positive width and height inside their image" in m for m in log)
    assert not any("clipped" in m or "left out" in m for m in log)


def test_rle_masks_with_polygon_format_name_the_key(tmp_path):
    """detectron2 reads a dict `segmentation` (RLE) only as a bitmask; with the default
    INPUT.MASK_FORMAT polygon it would stop mid-training, so the check says it first."""
    name = write_coco(tmp_path, {"img0.jpg": [GOOD]})
    ann = DatasetCatalog.get(name)[0]["annotations"][0]
    ink = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    ink[12:28, 12:28] = 1
    rle = mask_util.encode(ink)
    rle["counts"] = rle["counts"].decode()  # as a COCO json holds it
    records = DatasetCatalog.get(name)
    records[0]["annotations"][0] = dict(ann, segmentation=rle)
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    with pytest.raises(ConfigError, match=r"INPUT.MASK_FORMAT='polygon' is not valid: expected "
                                          r"'bitmask' for this data.*img0.jpg.*RLE"):
        Trainer.build_train_loader(make_cfg(name, "MODEL.MASK_ON", True))
    loader = Trainer.build_train_loader(make_cfg(name, "MODEL.MASK_ON", True,
                                                 "INPUT.MASK_FORMAT", "bitmask"))
    assert next(iter(loader))[0]["instances"].gt_masks.tensor.shape[-2:] == (SIZE, SIZE)


def test_wholly_outside_agrees_with_detectron2s_intersection_on_a_wide_image():
    """box_problem's "wholly outside" on a 100x50 (w x h) image is detectron2's
    pairwise_intersection with the image being 0, for boxes all around and on its edges, in
    XYWH and XYXY; sizes that are not positive or finite are named."""
    import torch
    from detectron2.structures import Boxes, BoxMode
    from detectron2.structures.boxes import pairwise_intersection

    from resnext_det.data.checks import box_problem

    height, width = 50, 100
    image = Boxes(torch.tensor([[0.0, 0.0, width, height]]))
    rng = np.random.default_rng(0)
    corners = np.concatenate([rng.uniform(-30, 130, (400, 2)),
                              rng.choice([-8.0, 0.0, 50.0, 92.0, 100.0], (100, 2))])
    sizes = rng.choice([4.0, 8.0, 20.0], (len(corners), 2))
    outside = 0
    for (x, y), (w, h) in zip(corners, sizes):
        overlap = pairwise_intersection(Boxes(torch.tensor([[x, y, x + w, y + h]])), image)
        expected = "lies wholly outside the 100x50 image" if overlap.item() == 0 else None
        outside += expected is not None
        assert box_problem([x, y, w, h], BoxMode.XYWH_ABS, (height, width)) == expected
        assert box_problem([x, y, x + w, y + h], BoxMode.XYXY_ABS, (height, width)) == expected
    assert 50 < outside < len(corners) - 50
    assert box_problem([float("nan"), 0, 5, 5], BoxMode.XYWH_ABS, (height, width)) == "is not finite"
    assert box_problem([0, 0, 5, 0], BoxMode.XYWH_ABS, (height, width)) == "height 0 is not positive"


def test_category_ids_must_lie_below_num_classes_and_crowds_are_not_box_checked():
    """category_id == NUM_CLASSES is detectron2's background class: an error, not a box."""
    from resnext_det.data.checks import check_category_ids, find_bad_boxes

    record = {"file_name": "a.jpg", "height": 50, "width": 100,
              "annotations": [{"bbox": [1, 1, 5, 5], "bbox_mode": 1, "category_id": 2}]}
    check_category_ids([record], 3, key="MODEL.ROI_HEADS.NUM_CLASSES")
    with pytest.raises(DatasetError, match=r"a.jpg: category_id 2"):
        check_category_ids([record], 2, key="MODEL.ROI_HEADS.NUM_CLASSES")
    crowd = {"bbox": [1, 1, 0, 5], "bbox_mode": 1, "category_id": 0, "iscrowd": 1}
    record["annotations"].append(crowd)
    assert find_bad_boxes([record]) == ([], 1, 0)  # the crowd box is neither checked nor bad


def test_images_left_with_too_few_keypoints_are_dropped_as_detectron2_drops_them(tmp_path):
    """A skipped box takes its keypoints with it: the image is then filtered as detectron2's
    get_detection_dataset_dicts filters the same set without that box (it kept img0, whose
    keypoints all but one were on the bad box)."""
    from detectron2.data import get_detection_dataset_dicts

    name = write_coco(tmp_path, {"img0.jpg": [GOOD, [30, 21, -10, 12]], "img1.jpg": [GOOD]})
    records = DatasetCatalog.get(name)
    visible = {(0, 0): 1, (0, 1): 2, (1, 0): 2}  # (image, annotation): visible keypoints
    for (i, j), count in visible.items():
        records[i]["annotations"][j]["keypoints"] = [5, 5, 2] * count + [0, 0, 0] * (3 - count)
    cleaned = [dict(r, annotations=[a for a in r["annotations"] if a["bbox"][2] > 0])
               for r in records]
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    DatasetCatalog.register(f"{name}_cleaned", lambda: cleaned)
    expected = get_detection_dataset_dicts([f"{name}_cleaned"], min_keypoints=2)
    cfg = make_cfg(name, "MODEL.KEYPOINT_ON", True,
                   "MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE", 2)
    with captured("resnext_det.data.checks"):
        dicts = checked_train_dicts(cfg)
    assert [d["file_name"] for d in dicts] == [d["file_name"] for d in expected]
    assert [Path(d["file_name"]).name for d in dicts] == ["img1.jpg"]


def test_a_test_set_of_other_classes_is_named_when_both_sets_load_their_names(tmp_path):
    """Sets registered as detectron2 documents it, register_coco_instances(name, {}, ...),
    have thing_classes only once loaded: the check ran before, found none, and every
    evaluation of the run scored each class as another."""
    from detectron2.data import MetadataCatalog

    train = write_coco(tmp_path / "train", {"img0.jpg": [GOOD]})
    test = write_coco(tmp_path / "test", {"img0.jpg": [GOOD]}, classes=("b", "a"))
    assert MetadataCatalog.get(train).get("thing_classes", None) is None
    with pytest.raises(DatasetError, match=r"the classes are in another order \(class 0 is 'a' "
                       rf"in DATASETS.TRAIN, 'b' in DATASETS.TEST '{test}'\)"):
        Trainer(make_cfg(train, "DATASETS.TEST", f"('{test}',)", output_dir=tmp_path / "out"))


def test_a_floating_point_picture_is_named_without_the_16_bit_reading(tmp_path):
    """tools/predict.py reads a 16-bit picture by its top 8 bits, and skips a floating-point
    one (as_rgb): the training error said predict read both."""
    from detectron2.data import DatasetMapper

    from resnext_det.data.checks import BadImageGuard

    guard = BadImageGuard(DatasetMapper(is_train=False, augmentations=[], image_format="RGB"))
    ramp = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
    for name, pixels in (("deep.png", (ramp * 16).astype(np.uint16)),
                         ("float.tif", ramp.astype(np.float32) / ramp.max())):
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(DatasetError) as error:
            guard({"file_name": str(tmp_path / name), "image_id": 1, "width": SIZE,
                   "height": SIZE})
        assert "is a picture of more than 8 bits" in str(error.value)
        assert ("tools/predict.py reads such files" in str(error.value)) == name.endswith("png")
