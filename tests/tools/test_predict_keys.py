"""predict's results against detectron2's own DefaultPredictor, picture by picture: each
detector family, the picture kinds PIL reads, a video's frames, the keys that change a
prediction, the ids and names of a registered COCO json, and the drawings' size.

The reference of each picture is detectron2 alone: DefaultPredictor (the model as built,
no FAST_INFERENCE copy, no batching) on the picture as detectron2's read_image reads it,
its Instances written by detectron2's instances_to_coco_json, masks as pycocotools RLE.
Tiny random detectors with spread class scores (tests/export/helpers.py) stand in for
trained ones.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.visualizer import Visualizer
from PIL import Image, ImageOps
from pycocotools import mask as mask_util

from resnext_det.data.checks import DatasetError
from resnext_det.engine import predict as predict_module
from tests.export.helpers import tiny_cfg, tiny_model

MASK = ["MODEL.MASK_ON", True, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16]
C4 = ["MODEL.BACKBONE.NAME", "build_resnext_backbone", "MODEL.RESNETS.OUT_FEATURES", ["res4"],
      "MODEL.RPN.IN_FEATURES", ["res4"], "MODEL.ROI_HEADS.IN_FEATURES", ["res4"],
      "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64]],
      "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]]]
FAMILIES = {  # (config of tests/export/helpers, overrides)
    "mask_rcnn_fpn": ("faster_rcnn", MASK),
    "keypoint_rcnn": ("faster_rcnn", ["MODEL.KEYPOINT_ON", True,
                                      "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 5,
                                      "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16]]),
    "c4_faster_rcnn": ("faster_rcnn", C4 + ["MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads",
                                            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.15]),
    "cascade_mask_rcnn": ("faster_rcnn", MASK + ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
                                                 "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True,
                                                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.26]),
    "retinanet": ("retinanet", []),
    "panoptic_fpn": ("faster_rcnn", ["MODEL.META_ARCHITECTURE", "PanopticFPN", *MASK,
                                     "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5,
                                     "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32]),
}
# a few tens of detections per picture, each picture another count (the families' own
# thresholds win): the random RetinaNet scores ~0.02 (its prior), the R-CNNs ~0.15-0.3
FEW = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.2, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.021,
       "TEST.DETECTIONS_PER_IMAGE", 40, "DATASETS.TEST", "()"]
SIZES = [(64, 64), (64, 128), (61, 59), (40, 30)]  # four input sizes: four batches of one


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """family -> the .pth of its tiny random model, made on first use."""
    folder, made = tmp_path_factory.mktemp("weights"), {}

    def get(family):
        if family not in made:
            arch, overrides = FAMILIES[family]
            made[family] = str(folder / f"{family}.pth")
            torch.save({"model": tiny_model(arch, *overrides).state_dict()}, made[family])
        return made[family]
    return get


def family_cfg(weights, family, *overrides):
    arch, family_overrides = FAMILIES[family]
    return tiny_cfg(arch, *FEW, *family_overrides, "MODEL.WEIGHTS", weights(family), *overrides)


def picture(h, w, seed=0):
    """An HxW BGR picture: blobs of colour (a smooth field) plus noise."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(field + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def write_pictures(folder, sizes=SIZES):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i}.png"), picture(h, w, seed=i))
    return sorted(str(p) for p in folder.glob("*.png"))


def run(cfg, paths, out, **kwargs):
    """predict's (results by image id, images.json) of `paths`."""
    predict_module.predict(cfg, paths, str(out), **kwargs)
    results = json.loads((out / "coco_instances_results.json").read_text())
    images = json.loads((out / "images.json").read_text())
    by_id = {img["id"]: [] for img in images["images"]}
    for r in results:
        by_id[r["image_id"]].append(r)
    return by_id, images


def detectron2_results(predictor, image, image_id=0):
    """detectron2's COCO results of one BGR picture: DefaultPredictor, instances_to_coco_json."""
    return instances_to_coco_json(predictor(image)["instances"], image_id)


def assert_same_results(got, expected, what, score_tol=1e-4, box_tol=1e-3):
    """The same detections (matched by class and box: an untrained model's near-equal
    scores may swap in rank), scores and boxes within float noise; masks (RLE) of IoU
    > 0.99 by pycocotools; keypoints (COCO's pixel indices) within 1e-3 px."""
    assert len(got) == len(expected), f"{what}: {len(got)} detections, expected {len(expected)}"
    for e in expected:
        same_class = [g for g in got if g["category_id"] == e["category_id"]]
        assert same_class, f"{what}: no detection of class {e['category_id']}"
        g = min(same_class, key=lambda g: np.abs(np.subtract(g["bbox"], e["bbox"])).max())
        assert np.abs(np.subtract(g["bbox"], e["bbox"])).max() < box_tol, (what, g, e)
        assert abs(g["score"] - e["score"]) < score_tol, (what, g["score"], e["score"])
        if "segmentation" in e:
            assert g["segmentation"]["size"] == e["segmentation"]["size"], what
            if mask_util.area(e["segmentation"]) > 0:
                assert mask_util.iou([g["segmentation"]], [e["segmentation"]], [0])[0, 0] > 0.99
        if "keypoints" in e:
            assert np.allclose(g["keypoints"], e["keypoints"], atol=1e-3), what


def assert_defaultpredictors(cfg, by_id, images, read=None):
    """Each picture's results are DefaultPredictor's on it (read: path -> BGR picture);
    most pictures have some."""
    predictor = DefaultPredictor(cfg)
    read = read or (lambda path: read_image(path, format="BGR"))
    with_some = 0
    for img in images["images"]:
        expected = detectron2_results(predictor, read(img["file_name"]), img["id"])
        assert_same_results(by_id[img["id"]], expected, img["file_name"])
        with_some += bool(expected)
    assert with_some > len(images["images"]) / 2, f"{with_some} pictures with detections"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_writes_defaultpredictors_detections(family, weights, tmp_path):
    """Boxes, scores, classes, masks (RLE) and keypoints of the default copy (folded,
    channels_last, the sparse ROIAlign), --batch-size 8 over four input sizes."""
    cfg = family_cfg(weights, family)
    by_id, images = run(cfg, write_pictures(tmp_path / "in"), tmp_path / "out", batch_size=8)
    assert_defaultpredictors(cfg, by_id, images)
    counts = [len(rows) for rows in by_id.values()]
    assert len(set(counts)) > 1, counts  # not TEST.DETECTIONS_PER_IMAGE everywhere


@pytest.mark.parametrize("overrides, batch_size", [
    (["INPUT.FORMAT", "RGB"], 1),  # each picture flipped to RGB before the resize
    (["INPUT.MIN_SIZE_TEST", 0], 8),  # no resize: pictures as they come
    (["INPUT.MIN_SIZE_TEST", 100, "INPUT.MAX_SIZE_TEST", 150], 3),  # up, capped by the long side
    (["MODEL.RESNEXT.FAST_INFERENCE", ""], 8),  # the model as trained
    (["MODEL.RESNEXT.FAST_INFERENCE", "fold"], 8),
    (["TEST.DETECTIONS_PER_IMAGE", 5], 8),
    (["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.17, "MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.3], 8),
])
def test_keys_give_defaultpredictors_detections(overrides, batch_size, weights, tmp_path):
    cfg = family_cfg(weights, "mask_rcnn_fpn", *overrides)
    paths = write_pictures(tmp_path / "in", SIZES + [(64, 64), (64, 128)])  # sizes come back
    by_id, images = run(cfg, paths, tmp_path / "out", batch_size=batch_size)
    assert_defaultpredictors(cfg, by_id, images)


def test_batch_size_changes_no_detection(weights, tmp_path):
    """Pictures of mixed sizes in batches of 8 and one at a time: the same results."""
    cfg = family_cfg(weights, "retinanet")
    paths = write_pictures(tmp_path / "in", [(64, 64), (64, 64), (61, 59), (64, 64), (64, 128)])
    one, _ = run(cfg, paths, tmp_path / "one", batch_size=1)
    eight, images = run(cfg, paths, tmp_path / "eight", batch_size=8)
    for img in images["images"]:
        assert_same_results(eight[img["id"]], one[img["id"]], img["file_name"], 1e-6, 1e-5)


def test_bfloat16_scores_within_its_rounding(weights, tmp_path):
    """INFERENCE_DTYPE bfloat16 (README: "the number type of ... prediction"): each
    detection scored well above the threshold is one of float32 DefaultPredictor's, its
    score within bfloat16's rounding through the network (~1%), its box within 1 px."""
    cfg = family_cfg(weights, "mask_rcnn_fpn", "MODEL.RESNEXT.INFERENCE_DTYPE", "bfloat16")
    by_id, images = run(cfg, write_pictures(tmp_path / "in"), tmp_path / "out")
    float32 = cfg.clone()
    float32.MODEL.RESNEXT.INFERENCE_DTYPE = "float32"
    predictor, compared = DefaultPredictor(float32), 0
    for img in images["images"]:
        expected = detectron2_results(predictor, read_image(img["file_name"], format="BGR"))
        for g in (g for g in by_id[img["id"]] if g["score"] > 0.21):
            e = min((e for e in expected if e["category_id"] == g["category_id"]),
                    key=lambda e: np.abs(np.subtract(g["bbox"], e["bbox"])).max())
            assert np.abs(np.subtract(g["bbox"], e["bbox"])).max() < 1.0
            assert abs(g["score"] - e["score"]) < 0.03 * e["score"]
            compared += 1
    assert compared > 10


def write_picture_kinds(folder):
    """The same 64x128 picture as PIL writes it in each kind; {name: path}."""
    folder.mkdir()
    base = Image.fromarray(picture(64, 128)[:, :, ::-1])  # RGB
    rgba = np.dstack([np.asarray(base), np.full((64, 128), 255, np.uint8)])
    rgba[:, :40, 3], rgba[20:40, 60:, 3] = 0, 128  # transparent and half transparent
    la = np.dstack([np.asarray(base.convert("L")), rgba[:, :, 3]])
    palette = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    pictures = {
        "cmyk.jpg": base.convert("CMYK"), "palette.png": palette, "gray.png": base.convert("L"),
        "gray_alpha.png": Image.fromarray(la, "LA"), "rgba.png": Image.fromarray(rgba, "RGBA"),
        "one_bit.png": base.convert("1"), "picture.gif": base, "picture.bmp": base,
        "picture.webp": base, "rgba.webp": Image.fromarray(rgba, "RGBA"),
    }
    paths = {}
    for name, image in pictures.items():
        paths[name] = folder / name
        image.save(paths[name], **({"lossless": True} if name.endswith(".webp") else {}))
    paths["palette_transparent.png"] = folder / "palette_transparent.png"
    palette.save(paths["palette_transparent.png"], transparency=0)
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation  # EXIF Orientation
        paths[f"exif{orientation}.jpg"] = folder / f"exif{orientation}.jpg"
        base.save(paths[f"exif{orientation}.jpg"], exif=exif, quality=95)
    gray16 = np.asarray(base.convert("L")).astype(np.uint16) * 64 + 100  # values 100-16420
    paths["gray16.png"] = folder / "gray16.png"
    Image.fromarray(gray16).save(paths["gray16.png"])
    return {name: str(path) for name, path in paths.items()}


def test_picture_kinds_are_read_as_detectron2_reads_them(weights, tmp_path):
    """EXIF orientations 2..8 (turned as PIL's exif_transpose turns them), CMYK, palette
    with and without transparency, L, LA, RGBA, 1-bit, GIF, WebP, BMP: detectron2's
    read_image (alpha dropped: each pixel its stored colour, as training and evaluation
    read it); a 16-bit picture by its top 8 bits, as OpenCV reads it (README; read_image
    makes it white)."""
    paths = write_picture_kinds(tmp_path / "kinds")
    cfg = family_cfg(weights, "mask_rcnn_fpn", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.15)
    by_id, images = run(cfg, list(paths.values()), tmp_path / "out")
    assert len(images["images"]) == len(paths)
    for img in images["images"]:
        with Image.open(img["file_name"]) as image:
            assert (img["width"], img["height"]) == ImageOps.exif_transpose(image).size
    assert read_image(paths["gray16.png"], format="BGR").min() == 255  # why ours differs
    read = lambda path: cv2.imread(path) if path == paths["gray16.png"] else (  # noqa: E731
        read_image(path, format="BGR"))
    assert_defaultpredictors(cfg, by_id, images, read)


def test_video_frames_are_the_pictures_of_those_frames(weights, tmp_path):
    """A video written by cv2.VideoWriter and its decoded frames given as PNG pictures:
    the same detections frame by frame."""
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for seed in range(3):
        writer.write(picture(64, 128, seed))
    writer.release()
    capture, frames = cv2.VideoCapture(str(video)), tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), capture.read()[1])
    capture.release()
    cfg = family_cfg(weights, "keypoint_rcnn")
    by_id, images = run(cfg, [str(video)] + sorted(map(str, frames.glob("*.png"))),
                        tmp_path / "out")
    of_frame = {img["frame"]: img["id"] for img in images["images"] if "frame" in img}
    of_png = {int(Path(img["file_name"]).stem): img["id"] for img in images["images"]
              if "frame" not in img}
    assert sorted(of_frame) == sorted(of_png) == [0, 1, 2]
    for i in range(3):
        assert_same_results(by_id[of_frame[i]], by_id[of_png[i]], f"frame {i}", 1e-6, 1e-5)


def coco_set(folder):
    """Three pictures and a json whose categories are 7 'dog' and 3 'cat', image ids 100-102."""
    folder.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "dog"},
                                                           {"id": 3, "name": "cat"}]}
    for i, (h, w) in enumerate([(64, 64), (64, 128), (61, 59)]):
        cv2.imwrite(str(folder / f"{i}.png"), picture(h, w, seed=i))
        coco["images"].append({"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h})
        coco["annotations"].append({"id": i + 1, "image_id": 100 + i, "category_id": 3,
                                    "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0})
    (folder / "ann.json").write_text(json.dumps(coco))
    return folder / "ann.json"


def test_a_registered_coco_json_gives_its_ids_and_class_names(tmp_path):
    """A COCO json registered by detectron2's register_coco_instances and not loaded yet
    (the metadata has no thing_classes until load_coco_json runs): images.json listed no
    categories and the pictures showed class indices; a model of another class count was
    not refused but stopped on a KeyError traceback at its first detection of a class the
    json lacks. Now the json's names label them, as detectron2 loads them."""
    json_file, name = coco_set(tmp_path / "set"), f"predict_keys_{tmp_path.name}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path / "set"))
    paths = sorted(str(p) for p in (tmp_path / "set").glob("*.png"))
    torch.save({"model": tiny_model("faster_rcnn", "MODEL.ROI_HEADS.NUM_CLASSES", 10)
                .state_dict()}, tmp_path / "ten.pth")
    cfg = tiny_cfg("faster_rcnn", "MODEL.WEIGHTS", str(tmp_path / "ten.pth"), *FEW,
                   "DATASETS.TEST", f"('{name}',)", "MODEL.ROI_HEADS.NUM_CLASSES", 10)
    with pytest.raises(DatasetError, match=rf"NUM_CLASSES=10 but DATASETS.TEST\[0\]='{name}'.*"
                       r"has 2 classes \['cat', 'dog'\]"):
        predict_module.predict(cfg, paths, str(tmp_path / "ten"))

    torch.save({"model": tiny_model("faster_rcnn", "MODEL.ROI_HEADS.NUM_CLASSES", 2)
                .state_dict()}, tmp_path / "two.pth")
    cfg.merge_from_list(["MODEL.WEIGHTS", str(tmp_path / "two.pth"),
                         "MODEL.ROI_HEADS.NUM_CLASSES", 2])
    by_id, images = run(cfg, paths, tmp_path / "out")
    DatasetCatalog.get(name)  # detectron2's load_coco_json: names and id map, the reference
    metadata = MetadataCatalog.get(name)
    to_json = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
    assert images["categories"] == [{"id": to_json[i], "name": n}
                                    for i, n in enumerate(metadata.thing_classes)]
    coco = json.loads(json_file.read_text())
    assert sorted(by_id) == sorted(img["id"] for img in coco["images"])
    predictor = DefaultPredictor(cfg)
    for img in images["images"]:
        expected = detectron2_results(predictor, read_image(img["file_name"], format="BGR"),
                                      img["id"])
        for e in expected:
            e["category_id"] = to_json[e["category_id"]]
        assert_same_results(by_id[img["id"]], expected, img["file_name"])


@pytest.mark.parametrize("scale", [0.7, 1.5])
def test_drawn_size_is_the_visualizers(scale, weights, tmp_path):
    """--scale: each drawing has the size of detectron2's Visualizer canvas at that scale
    (each side * scale, rounded down)."""
    cfg = family_cfg(weights, "mask_rcnn_fpn")
    _, images = run(cfg, write_pictures(tmp_path / "in"), tmp_path / "out", scale=scale)
    for img in images["images"]:
        blank = Visualizer(read_image(img["file_name"], format="RGB"), Metadata(), scale=scale)
        drawn = cv2.imread(str(tmp_path / "out" / img["output"]))
        assert drawn.shape == blank.output.get_image().shape, img["file_name"]
