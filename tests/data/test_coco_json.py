"""--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR: parsing, the json checks, registration, NUM_CLASSES.

The COCO files are written here by hand (not with resnext_det), and what detectron2's own
load_coco_json makes of a registered file is the reference for the metadata.
"""
import copy
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from resnext_det.data.checks import DatasetError
from tests.helpers import pycocotools_stats
from resnext_det.data.coco_json import (check_coco_json, num_classes_opts, parse_dataset_arg,
                                        register_coco_json)

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")


def coco_dict():
    """Two 32x32 images; categories with non-contiguous, unsorted ids; three boxes."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32},
                   {"id": 2, "file_name": "sub/b.png", "width": 32, "height": 32}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 12], "area": 120,
             "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 8], "area": 160,
             "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16,
             "iscrowd": 0}],
    }


def write(tmp_path, data, text=None):
    """The images of coco_dict under tmp_path/images, `data` (or raw `text`) as ann.json."""
    images = tmp_path / "images"
    for name in ("a.png", "sub/b.png"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(images / name)
    json_file = tmp_path / "ann.json"
    json_file.write_text(text if text is not None else json.dumps(data))
    return str(json_file), str(images)


def fresh_name():
    return f"mine_{uuid.uuid4().hex[:8]}"


def test_registered_like_detectron2_loads_it(tmp_path):
    json_file, images = write(tmp_path, coco_dict())
    name = fresh_name()
    summary = register_coco_json(name, json_file, images)
    assert summary.thing_classes == ["cat", "dog"] and summary.num_bad_boxes == 0
    # detectron2's load_coco_json runs now; it sets thing_classes and the id map itself and
    # raises if they differ from what we registered
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert [os.path.relpath(d["file_name"], images) for d in dicts] == ["a.png", "sub/b.png"]
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0], [1, 0]]
    register_coco_json(name, json_file, images)  # the same files again: kept


def test_parse_dataset_arg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_dataset_arg("mine=ann/train.json:img/train")
    assert spec == ("mine", str(tmp_path / "ann/train.json"), str(tmp_path / "img/train"))
    (tmp_path / "a:b.json").write_text("{}")  # a json path with a colon, when the file exists
    assert parse_dataset_arg("x=a:b.json:img").json_file == str(tmp_path / "a:b.json")
    for bad in ("mine", "mine=ann.json", "=a.json:img", "mine=:img", "mine=a.json:"):
        with pytest.raises(DatasetError, match="NAME=ANNOTATIONS_JSON:IMAGE_DIR"):
            parse_dataset_arg(bad)


def _drop(key):
    def change(d):
        del d[key]
    return change


def _set(section, index, key, value):
    def change(d):
        d[section][index][key] = value
    return change


# (case, change to coco_dict, what the message must hold: the first bad entry and the problem)
BAD = [
    ("no images", _drop("images"), "'images': is missing"),
    ("no annotations", lambda d: d.update(annotations=[]), "'annotations': is empty"),
    ("no categories", _drop("categories"), "'categories': is missing"),
    ("categories not a list", lambda d: d.update(categories={"id": 1}), "'categories': is a dict"),
    ("annotation of a missing image",
     lambda d: [d["annotations"][i].update(image_id=99) for i in (1, 2)],
     "annotations[1] (id 11): has image_id 99, which is the id of no entry of 'images'"),
    ("unknown category", _set("annotations", 2, "category_id", 5),
     "annotations[2] (id 12): has category_id 5"),
    ("box of 3 numbers", _set("annotations", 0, "bbox", [1, 2, 3]),
     "annotations[0] (id 10): has bbox [1, 2, 3]"),
    ("box not finite", _set("annotations", 1, "bbox", [1, 2, float("nan"), 3]),
     "annotations[1] (id 11): has bbox"),
    ("repeated image id", _set("images", 1, "id", 1), "images[1] (id 1): repeats the id of images[0]"),
    ("repeated annotation id", _set("annotations", 2, "id", 10),
     "annotations[2] (id 10): repeats the id"),
    ("image without height", lambda d: d["images"][1].pop("height"),
     "images[1] (id 2): has height None"),
    ("category without name", lambda d: d["categories"][0].pop("name"),
     "categories[0] (id 7): has name None"),
    ("annotation without id", lambda d: d["annotations"][1].pop("id"), "annotations[1]: has id None"),
    ("ignore flag", _set("annotations", 0, "ignore", 1), "annotations[0] (id 10): has 'ignore' set"),
    ("missing image file", _set("images", 1, "file_name", "gone.png"),
     "1 of 2 images are not under the image folder"),
    # pycocotools' COCOeval stops on a KeyError without them; faster-coco-eval takes a missing
    # area as 0 and files every object as small
    ("annotation without area", lambda d: d["annotations"][1].pop("area"),
     "annotations[1] (id 11): has area None; expected a number >= 0"),
    ("annotation without iscrowd", lambda d: d["annotations"][2].pop("iscrowd"),
     "annotations[2] (id 12): has iscrowd None"),
    ("iscrowd a bool", _set("annotations", 1, "iscrowd", True),  # JSON true: not COCO's 0/1
     "annotations[1] (id 11): has iscrowd True; expected 0 (an object) or 1"),
    ("area negative", _set("annotations", 0, "area", -1), "annotations[0] (id 10): has area -1"),
    ("image id a list", _set("annotations", 0, "image_id", [1]),  # was: unhashable TypeError
     "annotations[0] (id 10): has image_id [1]; expected an integer"),
    # load_coco_json drops the object, box included (test_objects_without_a_polygon_...)
    ("polygon of 2 points", _set("annotations", 1, "segmentation", [[5, 5, 25, 13]]),
     "annotations[1] (id 11): has segmentation [[5, 5, 25, 13]], no polygon of 3 points"),
    ("polygon of odd length", _set("annotations", 0, "segmentation", [[2, 3, 12, 3, 12]]),
     "annotations[0] (id 10): has segmentation [[2, 3, 12, 3, 12]], no polygon"),
    # load_coco_json: TypeError (len() of a float); pycocotools: a box
    ("polygon not nested", _set("annotations", 2, "segmentation", [1, 1, 5, 1, 5, 5]),
     "annotations[2] (id 12): has segmentation [1, 1, 5, 1, 5, 5]; expected polygons"),
    ("RLE without size", _set("annotations", 0, "segmentation", {"counts": "abc"}),
     "annotations[0] (id 10): has segmentation {'counts': 'abc'}; an RLE mask is"),
    # the data loader raised on these when it first sampled the image, maybe hours in:
    # pycocotools' ValueError, or a bare assert for a mask of another size
    ("RLE of another size", _set("annotations", 0, "segmentation",
                                 {"counts": [256], "size": [16, 16]}),
     "annotations[0] (id 10): has an RLE mask of size [16, 16], not its image's [height, "
     "width] [32, 32]"),
    ("RLE runs not adding up", _set("annotations", 1, "segmentation",
                                    {"counts": [10, 5], "size": [32, 32]}),
     "annotations[1] (id 11): has segmentation {'counts': [10, 5], 'size': [32, 32]}, an RLE "
     "whose counts do not decode to 32 x 32 pixels"),
    ("RLE counts garbage", _set("annotations", 2, "segmentation",
                                {"counts": "!!!!", "size": [32, 32]}),
     "annotations[2] (id 12): has segmentation {'counts': '!!!!', 'size': [32, 32]}, an RLE"),
    # one class of the results, AP-dog, stood for both; drawn labels could not be told apart
    ("category names repeat", _set("categories", 1, "name", "dog"),
     "categories[1] (id 3): repeats the name 'dog' of categories[0]"),
    # faster-coco-eval holds ids as doubles (a RuntimeError after the training); orjson
    # refused ids of 2^64 (a TypeError)
    ("image id of 2^53", lambda d: [d["images"][1].update(id=2 ** 53)]
     + [a.update(image_id=2 ** 53) for a in d["annotations"][1:]],
     f"images[1] (id {2 ** 53}): has id {2 ** 53}; expected an integer below 2^53 in size"),
    ("category id of 2^64", lambda d: [d["categories"][0].update(id=2 ** 64)]
     + [d["annotations"][1].update(category_id=2 ** 64)],
     f"categories[0] (id {2 ** 64}): has id {2 ** 64}; expected an integer below 2^53"),
    ("keypoints a string", _set("annotations", 0, "keypoints", "abc"),  # load_coco_json: TypeError
     "annotations[0] (id 10): has keypoints 'abc'; expected [x1, y1, v1, x2, y2, v2, ...]"),
]


@pytest.mark.parametrize("case,change,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_json_names_file_and_first_bad_entry(tmp_path, case, change, expected):
    data = coco_dict()
    change(data)
    json_file, images = write(tmp_path, data)
    name = fresh_name()
    with pytest.raises(DatasetError) as error:
        register_coco_json(name, json_file, images)
    assert json_file in str(error.value) and expected in str(error.value), str(error.value)
    assert name not in DatasetCatalog.list()


@pytest.mark.parametrize("text,expected", [
    ("", "is not JSON (Expecting value: line 1 column 1"),
    ('{"images": [', "is not JSON"),
    ("\xff\xfe", "is not JSON"),
    ("[]", "the top level: is a JSON list"),
    ("\ufeff{}", "starts with a UTF-8 byte order mark"),  # pycocotools' json.load refuses it
])
def test_not_a_coco_object(tmp_path, text, expected):
    json_file, images = write(tmp_path, None, text=text)
    with pytest.raises(DatasetError, match=r"ann\.json") as error:
        check_coco_json(json_file, images)
    assert expected in str(error.value)


def test_missing_files_and_taken_names(tmp_path):
    json_file, images = write(tmp_path, coco_dict())
    with pytest.raises(DatasetError, match="does not exist"):
        check_coco_json(str(tmp_path / "nope.json"), images)
    with pytest.raises(DatasetError, match="is not a folder"):
        check_coco_json(json_file, str(tmp_path / "no_images"))
    with pytest.raises(DatasetError, match="'coco_2017_val' is already registered"):
        register_coco_json("coco_2017_val", json_file, images)  # detectron2's builtin name


def test_non_positive_boxes_are_counted_not_refused(tmp_path):
    """They are left to training's DATALOADER.ON_BAD_BOX check (skip with a count, or error)."""
    data = coco_dict()
    data["annotations"][1]["bbox"] = [5, 5, 0, 8]
    data["annotations"][2]["bbox"] = [1, 1, 4, -4]
    json_file, images = write(tmp_path, data)
    summary = check_coco_json(json_file, images)
    assert summary.num_bad_boxes == 2 and summary.first_bad_box.startswith("annotations[1] (id 11)")


def _yaml(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(f'_BASE_: "{ROOT}/configs/Base-RCNN-FPN-ResNeXt.yaml"\n{text}')
    return str(path)


def test_num_classes_from_the_json_when_unset(tmp_path):
    classes = {"mine": ["cat", "dog"]}
    config = _yaml(tmp_path, 'DATASETS:\n  TRAIN: ("mine",)\n  TEST: ()\n')
    assert num_classes_opts(config, [], classes) == ["MODEL.ROI_HEADS.NUM_CLASSES", "2"]
    # set and equal: nothing to add
    assert num_classes_opts(config, ["MODEL.ROI_HEADS.NUM_CLASSES", "2"], classes) == []
    retina = _yaml(tmp_path, 'MODEL:\n  META_ARCHITECTURE: "RetinaNet"\n')  # cfg.yaml again
    assert num_classes_opts(retina, ["DATASETS.TEST", "('mine',)"], classes) == [
        "MODEL.RETINANET.NUM_CLASSES", "2"]


def test_a_dataset_no_config_key_names_is_an_error():
    """--dataset without DATASETS.TRAIN / TEST naming it: the run went on with the config's
    datasets (the demo trained on the digits), as if the json had been used."""
    with pytest.raises(DatasetError, match=r"--dataset 'mine' is named by neither DATASETS."
                       r"TRAIN \('digits_train',\) nor DATASETS.TEST \('digits_val',\)"):
        num_classes_opts(DEMO, [], {"mine": ["cat", "dog"]})


def test_num_classes_mismatch_is_an_error(tmp_path):
    classes = {"mine": ["cat", "dog"]}
    with pytest.raises(DatasetError) as error:
        num_classes_opts(DEMO, ["DATASETS.TRAIN", "('mine',)"], classes)
    message = str(error.value)
    assert "MODEL.ROI_HEADS.NUM_CLASSES=10 (set in " in message and "has 2 categories" in message
    assert "Pass MODEL.ROI_HEADS.NUM_CLASSES 2" in message
    config = _yaml(tmp_path, 'DATASETS:\n  TRAIN: ("mine",)\n')
    with pytest.raises(DatasetError, match="NUM_CLASSES=3 .set on the command line"):
        num_classes_opts(config, ["MODEL.ROI_HEADS.NUM_CLASSES", "3"], classes)
    with pytest.raises(DatasetError, match="different numbers of classes"):
        num_classes_opts(config, ["DATASETS.TEST", "('other',)"], {**classes, "other": ["a"]})


@pytest.mark.parametrize("val", [["dog", "cat"], ["cat", "bird"]])
def test_train_and_test_sets_with_other_classes_are_an_error(tmp_path, val):
    """Same count, other names or order: class 0 was trained as 'cat' and scored as 'dog'."""
    config = _yaml(tmp_path, 'DATASETS:\n  TRAIN: ("mine",)\n  TEST: ("theirs",)\n')
    classes = {"mine": ["cat", "dog"], "theirs": val}
    i = 0 if val[0] != "cat" else 1
    with pytest.raises(DatasetError, match=rf"'theirs' and 'mine' order their classes "
                       rf"differently: class {i} is '{val[i]}' in 'theirs' and '{['cat', 'dog'][i]}' in 'mine'"):
        num_classes_opts(config, [], classes)
    assert num_classes_opts(config, [], {**classes, "theirs": ["cat", "dog"]}) == [
        "MODEL.ROI_HEADS.NUM_CLASSES", "2"]


def test_objects_without_a_polygon_are_dropped_by_detectron2(tmp_path):
    """Why a polygon of < 3 points is an error: detectron2's own loader leaves the whole
    object out (its box too), and keeps the objects whose masks it can read."""
    from detectron2.data.datasets import load_coco_json

    data = coco_dict()
    data["annotations"][0]["segmentation"] = [[2, 3, 12, 3, 12, 15]]  # kept
    data["annotations"][1]["segmentation"] = [[5, 5, 25, 13]]  # a line: dropped
    data["annotations"][2]["segmentation"] = {"counts": [0, 16, 1008], "size": [32, 32]}
    json_file, images = write(tmp_path, data)
    loaded = load_coco_json(json_file, images, fresh_name())
    assert sorted(a["bbox"][2] for r in loaded for a in r["annotations"]) == [4, 10]
    with pytest.raises(DatasetError, match=r"annotations\[1\] \(id 11\).*no polygon"):
        check_coco_json(json_file, images)
    data["annotations"][1]["segmentation"] = [[5, 5, 25, 13], [5, 5, 25, 5, 25, 13]]
    json_file, images = write(tmp_path, data)
    assert len(load_coco_json(json_file, images, fresh_name())[1]["annotations"]) == 2
    assert check_coco_json(json_file, images).num_annotations == 3


def test_zero_area_and_crowd_regions_are_valid(tmp_path):
    """COCO has objects of area 0 (a degenerate mask) and crowd regions (iscrowd 1)."""
    data = coco_dict()
    data["annotations"][0]["area"] = 0
    data["annotations"][2]["iscrowd"] = 1  # a crowd of cats; annotations[0] is a cat object
    json_file, images = write(tmp_path, data)
    check_coco_json(json_file, images)


def test_an_rle_mask_of_its_image_size_is_valid(tmp_path):
    """Masks as pycocotools encodes them (compressed counts) and as uncompressed runs."""
    from pycocotools import mask as mask_util

    pixels = np.zeros((32, 32), np.uint8, order="F")
    pixels[3:15, 2:12] = 1
    rle = mask_util.encode(pixels)
    data = coco_dict()
    data["annotations"][0]["segmentation"] = {"size": rle["size"],
                                              "counts": rle["counts"].decode()}
    data["annotations"][1]["segmentation"] = {"size": [32, 32], "counts": [100, 24, 900]}
    json_file, images = write(tmp_path, data)
    check_coco_json(json_file, images)


def _every_object_found(dicts):
    """COCO results of a perfect detector: each picture's objects (those of every entry of
    its file), boxes as the json has them, score 1, per image id."""
    by_file = {}
    for record in dicts:
        by_file.setdefault(os.path.realpath(record["file_name"]), []).extend(record["annotations"])
    return [{"image_id": record["image_id"], "category_id": category_id, "bbox": a["bbox"],
             "score": 1.0}
            for record in dicts for a in by_file[os.path.realpath(record["file_name"])]
            for category_id in [{0: 3, 1: 7}[a["category_id"]]]]


@pytest.mark.parametrize("second", ["a.png", "./sub/../a.png"])
def test_a_picture_listed_twice_is_an_error(tmp_path, second):
    """Two entries of one file: detectron2 reads two images with part of the objects each,
    and pycocotools scores a perfect detector below 100 AP (each image's other objects are
    false positives)."""
    from detectron2.data.datasets import load_coco_json

    data = coco_dict()
    data["images"][1]["file_name"] = second  # b.png's objects now belong to a.png
    json_file, images = write(tmp_path, data)
    loaded = load_coco_json(json_file, images, fresh_name())
    assert len({os.path.realpath(r["file_name"]) for r in loaded}) == 1 < len(loaded)
    assert pycocotools_stats(json_file, _every_object_found(loaded))["AP"] < 100
    merged = coco_dict()
    del merged["images"][1]
    for ann in merged["annotations"]:
        ann["image_id"] = 1
    merged_file = tmp_path / "merged.json"
    merged_file.write_text(json.dumps(merged))
    assert pycocotools_stats(merged_file, _every_object_found(
        load_coco_json(str(merged_file), images, fresh_name())))["AP"] == 100
    with pytest.raises(DatasetError) as error:
        check_coco_json(json_file, images)
    assert (f"images[1] (id 2): has file_name {second!r}, the picture of images[0] (id 1) "
            "(file_name 'a.png')") in str(error.value)
    assert "List each picture once" in str(error.value)


def test_a_class_of_crowd_regions_only_is_an_error(tmp_path):
    """The only 'dog' a crowd region (CVAT's COCO export marks each bitmap mask so):
    detectron2's train mapper drops it and pycocotools has no dog to score (precision -1)."""
    from detectron2.data import DatasetMapper
    from detectron2.data.datasets import load_coco_json
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = coco_dict()
    data["annotations"][1]["iscrowd"] = 1  # the only dog
    json_file, images = write(tmp_path, data)
    record = load_coco_json(json_file, images, fresh_name())[1]
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    assert mapper(record)["instances"].gt_classes.tolist() == [0]  # the cat only
    coco = COCO(json_file)
    dog = {"image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 8], "score": 1.0}
    coco_eval = COCOeval(coco, coco.loadRes([dog]), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    assert (coco_eval.eval["precision"][:, :, coco_eval.params.catIds.index(7)] == -1).all()
    with pytest.raises(DatasetError) as error:
        check_coco_json(json_file, images)
    assert ("categories[0] (id 7): 'dog': all 1 of its annotations (e.g. annotations[1] (id 11)) "
            "are crowd regions (iscrowd 1)") in str(error.value)
    assert "Set iscrowd 0 on its objects" in str(error.value)


def _faster_coco_eval_ap(json_file, results):
    """AP (percent) by faster-coco-eval's own COCOeval_faster, run here."""
    from faster_coco_eval import COCO as FasterCOCO, COCOeval_faster

    coco_gt = FasterCOCO(str(json_file))
    coco_eval = COCOeval_faster(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox",
                                print_function=lambda *args: None)
    coco_eval.evaluate(), coco_eval.accumulate(), coco_eval.summarize()
    return 100 * coco_eval.stats[0]


@pytest.mark.parametrize("bad_id", [0, -1])
def test_annotation_ids_below_1_are_an_error(tmp_path, bad_id):
    """pycocotools and faster-coco-eval take a match to object id 0 for no match, and
    faster-coco-eval one to a negative id: a perfect detector scores below 100 AP, and 100
    once the ids start at 1."""
    from detectron2.data.datasets import load_coco_json

    score = pycocotools_stats if bad_id == 0 else (lambda *a: {"AP": _faster_coco_eval_ap(*a)})
    data = coco_dict()
    data["annotations"][0]["id"] = bad_id
    json_file, images = write(tmp_path, data)
    found = _every_object_found(load_coco_json(json_file, images, fresh_name()))
    assert score(json_file, found)["AP"] < 100
    data["annotations"][0]["id"] = 1
    renumbered = tmp_path / "renumbered.json"
    renumbered.write_text(json.dumps(data))
    assert score(renumbered, found)["AP"] == pytest.approx(100)
    with pytest.raises(DatasetError, match=rf"annotations\[0\] \(id {bad_id}\): has id {bad_id}; "
                       r"COCO evaluation takes a match to object 0 for 'matched to nothing'.* "
                       r"Number annotations from 1"):
        check_coco_json(json_file, images)
