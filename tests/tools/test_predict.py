"""tools/predict.py end to end: files, folders, globs, a video, bad inputs, --dataset.

The reference is detectron2's own DefaultPredictor, run here image by image on the same
weights; the ids are read here from the dataset's json. A tiny random model with widely
spread class scores stands in for a trained one (a few seconds per run).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from PIL import Image

import resnext_det
from resnext_det.data.checks import DatasetError
from resnext_det.engine import predict as predict_module
from resnext_det.utils.testing import detection_error, randomize_norms_
from tests.helpers import load_tool, lock_held_elsewhere

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")
TINY = ["MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.FPN.OUT_CHANNELS", "16",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]
THRESHOLD = 0.3


def tiny_cfg(*opts):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list([*TINY, "MODEL.DEVICE", "cpu", *opts])
    return cfg


def spread_class_scores_(model):
    """Make a random model's classes win on different boxes, with distinct scores.

    A random box head gives nearly the same features to every proposal, so one class
    wins everywhere. Each class's logit becomes a random projection of the features,
    centred on its median over the proposals of a noise image and scaled to std 2.
    """
    seen = []
    predictor = model.roi_heads.box_predictor
    hook = predictor.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        model.eval()([{"image": image, "height": 64, "width": 64}])
        hook.remove()
        features, cls_score = seen[0], model.roi_heads.box_predictor.cls_score
        num_classes = cls_score.out_features - 1  # the last row is the background
        weight = torch.randn(num_classes, features.shape[1])
        logits = features @ weight.T
        scale = 2.0 / logits.std(0).clamp_min(1e-6)
        cls_score.weight.zero_()
        cls_score.bias.zero_()
        cls_score.weight[:num_classes] = weight * scale[:, None]
        cls_score.bias[:num_classes] = -logits.median(0).values * scale
    return model.train()


def save_model(path, num_classes):
    """A tiny random model whose classes score like a trained model's (spread out); its .pth."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)))
    spread_class_scores_(randomize_norms_(model))
    DetectionCheckpointer(model, save_dir=str(path.parent)).save(path.stem)
    return str(path)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("model") / "digits.pth", 10)


def run_predict(args, datasets_root, expect_rc=0):
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root))
    proc = subprocess.run([sys.executable, str(ROOT / "tools/predict.py"), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_outputs(out):
    results = json.loads((out / "coco_instances_results.json").read_text())
    images = json.loads((out / "images.json").read_text())
    return results, images


def as_instances(results, image_id, size, category_ids):
    """COCO results of one image back to Instances (XYXY boxes, contiguous classes)."""
    rows = [r for r in results if r["image_id"] == image_id]
    xywh = torch.tensor([r["bbox"] for r in rows], dtype=torch.float64).reshape(-1, 4)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    return Instances(size, pred_boxes=Boxes(xyxy), scores=torch.tensor([r["score"] for r in rows]),
                     pred_classes=torch.tensor([category_ids.index(r["category_id"]) for r in rows],
                                               dtype=torch.int64))


def check_results(results, images_by_id, category_ids, threshold=THRESHOLD):
    """Every entry: a listed image, a category id of the json, an XYWH box in the image."""
    for r in results:
        image = images_by_id[r["image_id"]]
        x, y, w, h = r["bbox"]
        assert r["category_id"] in category_ids and r["score"] >= threshold
        assert w > 0 and h > 0 and x >= -1e-3 and y >= -1e-3
        assert x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3


def test_folder_glob_missing_and_corrupt_inputs(datasets_root, digits_model, tmp_path):
    val_dir = datasets_root / "digits/images/val"
    coco = json.loads((datasets_root / "digits/annotations/instances_val.json").read_text())
    json_ids = {img["file_name"]: img["id"] for img in coco["images"]}
    category_ids = sorted(c["id"] for c in coco["categories"])  # detectron2's contiguous order
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for name in sorted(json_ids)[:2]:  # two copies, as PNGs, outside the dataset
        Image.open(val_dir / name).save(pngs / f"copy_{Path(name).stem}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    out = tmp_path / "out"
    proc = run_predict(["--config-file", CONFIG, "--input", val_dir, f"{pngs}/*.png",
                        tmp_path / "missing.jpg", tmp_path / "broken.jpg", "--output", out,
                        "--confidence-threshold", THRESHOLD, "--scale", 2,
                        *TINY, "MODEL.WEIGHTS", digits_model], datasets_root)
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("Skipped")]
    assert len(skipped) == 1 and skipped[0].startswith("Skipped 2 inputs:"), proc.stdout[-2000:]
    assert f"'{tmp_path / 'missing.jpg'}' does not exist" in skipped[0]
    assert f"'{tmp_path / 'broken.jpg'}' cannot be read as an image" in skipped[0]
    assert "images/s" in proc.stderr  # the progress bar

    results, images = read_outputs(out)
    by_path = {img["file_name"]: img for img in images["images"]}
    inputs = [val_dir / n for n in sorted(json_ids)] + sorted(pngs.glob("*.png"))
    assert sorted(by_path) == sorted(map(str, inputs))
    for path in inputs:  # the dataset's own images keep their json ids; copies get new ones
        expected = json_ids.get(path.name) if path.parent == val_dir else None
        got = by_path[str(path)]["id"]
        assert got == expected if expected else got not in json_ids.values()
        picture = cv2.imread(str(out / by_path[str(path)]["output"]))
        assert picture.shape == (128, 128, 3)  # 64 px drawn at --scale 2
    assert len({img["id"] for img in images["images"]}) == len(inputs)
    assert [c["id"] for c in images["categories"]] == category_ids
    check_results(results, {img["id"]: img for img in images["images"]}, category_ids)
    assert len({r["category_id"] for r in results}) > 1

    cfg = tiny_cfg("MODEL.WEIGHTS", digits_model, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(THRESHOLD))
    predictor = DefaultPredictor(cfg)
    compared = 0
    for path in inputs:  # batched, on the folded channels_last copy: same detections
        expected = predictor(read_image(str(path), format="BGR"))["instances"]
        got = as_instances(results, by_path[str(path)]["id"], (64, 64), category_ids)
        assert detection_error(got, expected) < 1e-4, path
        compared += len(expected)
    assert compared == len(results) > 0


def test_video_input(datasets_root, digits_model, tmp_path):
    frames = [cv2.imread(str(p)) for p in sorted((datasets_root / "digits/images/val").iterdir())[:3]]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    for frame in frames:
        writer.write(frame)
    writer.release()
    capture = cv2.VideoCapture(str(video))
    decoded = [capture.read()[1] for _ in frames]  # what predict.py sees (lossy codec)
    out = tmp_path / "out"
    run_predict(["--config-file", CONFIG, "--input", video, "--output", out, "--confidence-threshold",
                 THRESHOLD, "--batch-size", 2, *TINY, "MODEL.WEIGHTS", digits_model], datasets_root)
    results, images = read_outputs(out)
    frames_seen = [(img["file_name"], img["frame"]) for img in images["images"]]
    assert frames_seen == [(str(video), i) for i in range(3)]
    drawn = cv2.VideoCapture(str(out / "clip.mp4"))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and drawn.read()[1].shape == (64, 64, 3)
    category_ids = [c["id"] for c in images["categories"]]
    check_results(results, {img["id"]: img for img in images["images"]}, category_ids)
    predictor = DefaultPredictor(tiny_cfg("MODEL.WEIGHTS", digits_model,
                                          "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(THRESHOLD)))
    for frame, image in zip(decoded, images["images"]):
        got = as_instances(results, image["id"], (64, 64), category_ids)
        assert detection_error(got, predictor(frame)["instances"]) < 1e-4


def coco_with_gaps(folder):
    """Three 64x64 images and a json whose two category ids are 7 ('dog') and 3 ('cat')."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "dog"},
                                                           {"id": 3, "name": "cat"}]}
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        coco["images"].append({"id": 100 + i, "file_name": f"{i}.png", "width": 64, "height": 64})
        coco["annotations"].append({"id": i + 1, "image_id": 100 + i, "category_id": (3, 7)[i % 2],
                                    "bbox": [8, 8, 20, 30], "area": 600, "iscrowd": 0})
    (folder / "ann.json").write_text(json.dumps(coco))
    return folder / "ann.json"


def test_dataset_json_gives_names_and_ids(datasets_root, tmp_path):
    """--dataset: class names and category ids 3 / 7 (not 0 / 1) from the user's json."""
    json_file = coco_with_gaps(tmp_path / "mine")
    weights = save_model(tmp_path / "two.pth", 2)
    out = tmp_path / "out"
    run_predict(["--config-file", CONFIG, "--input", tmp_path / "mine", "--output", out,
                 "--confidence-threshold", 0.1, "--dataset", f"mine={json_file}:{tmp_path / 'mine'}",
                 *TINY, "DATASETS.TEST", "('mine',)", "MODEL.ROI_HEADS.NUM_CLASSES", 2,
                 "MODEL.WEIGHTS", weights], datasets_root)
    results, images = read_outputs(out)
    assert images["categories"] == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    assert sorted(img["id"] for img in images["images"]) == [100, 101, 102]
    check_results(results, {img["id"]: img for img in images["images"]}, [3, 7], threshold=0.1)
    assert {r["category_id"] for r in results} == {3, 7}
    predictor = DefaultPredictor(tiny_cfg("MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                                          "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.1"))
    for image in images["images"]:
        expected = predictor(read_image(image["file_name"], format="BGR"))["instances"]
        got = as_instances(results, image["id"], (64, 64), [3, 7])
        assert detection_error(got, expected) < 1e-4


def _user_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        load_tool("predict").run(list(map(str, argv)))
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    return errors[0]


def test_no_readable_input_and_no_weights_are_errors(datasets_root, digits_model, tmp_path,
                                                     capsys, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    (tmp_path / "bad.png").write_bytes(b"no")
    error = _user_error(capsys, ["--config-file", CONFIG, "--input", tmp_path / "bad.png",
                                 tmp_path / "none", os.devnull, "--output", tmp_path / "o1",
                                 *TINY, "MODEL.WEIGHTS", digits_model])
    assert "no input could be read" in error and "bad.png' cannot be read as an image" in error
    assert f"'{tmp_path / 'none'}' does not exist" in error
    assert f"'{os.devnull}' is not a file or folder" in error  # it said "does not exist"
    error = _user_error(capsys, ["--config-file", CONFIG, "--input", tmp_path, "--output",
                                 tmp_path / "o2", *TINY])
    assert error.startswith("error: MODEL.WEIGHTS='' is not valid")


def test_a_test_set_that_cannot_label_the_results_is_an_error(datasets_root, digits_model,
                                                              tmp_path, capsys, monkeypatch):
    """A misspelt DATASETS.TEST[0] (detectron2's MetadataCatalog made an empty entry) and a
    registered one whose json is gone (its category ids nowhere else): the results' ids
    were the model's indices 0..K-1, one off against the digits json's 1..10."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    images = datasets_root / "digits/images/val"
    common = ["--config-file", CONFIG, "--input", images, *TINY, "MODEL.WEIGHTS", digits_model]
    error = _user_error(capsys, [*common[:4], "--output", tmp_path / "o1", *common[4:],
                                 "DATASETS.TEST", "('digits_vall',)"])
    assert error.startswith("error: DATASETS.TEST[0]='digits_vall' is not valid: expected a "
                            "registered dataset name")
    name = f"gone_{os.getpid()}_{tmp_path.name}"
    register_coco_instances(name, {"thing_classes": [str(d) for d in range(10)]},
                            str(tmp_path / "gone.json"), str(images))
    error = _user_error(capsys, [*common[:4], "--output", tmp_path / "o2", *common[4:],
                                 "DATASETS.TEST", f"('{name}',)"])
    assert "gone.json' cannot be read as a COCO json" in error and "would be guessed" in error
    assert not (tmp_path / "o2" / "coco_instances_results.json").exists()


def test_overrides_after_input_are_overrides(tmp_path, monkeypatch):
    """`--input a.png MODEL.WEIGHTS w.pth`: --input's nargs stops at the first config key;
    camera names (IMG_0001.JPG) are files; a SCORE_THRESH_TEST the user names wins."""
    monkeypatch.chdir(tmp_path)
    for name in ("IMG_0001.JPG", "DSC.0002.PNG"):
        (tmp_path / name).write_bytes(b"")
    args = load_tool("predict").parse_args([
        "--config-file", CONFIG, "--output", "o", "--input", "a.png", "b/", "IMG_0001.JPG",
        "DSC.0002.PNG", "MODEL.WEIGHTS", "w.pth", "SEED", "3"])
    assert args.input == ["a.png", "b/", "IMG_0001.JPG", "DSC.0002.PNG"]
    assert args.opts[-6:] == ["MODEL.WEIGHTS", "w.pth", "SEED", "3", "OUTPUT_DIR", "o"]
    # a missing TEST.jpg stays an input (then "does not exist"), not a key ("odd length")
    args = load_tool("predict").parse_args(["--config-file", CONFIG, "--output", "o", "--input",
                                            "a.png", "TEST.jpg", "SEED", "3"])
    assert args.input == ["a.png", "TEST.jpg"] and args.opts[-4:-2] == ["SEED", "3"]
    assert args.opts[args.opts.index("MODEL.ROI_HEADS.SCORE_THRESH_TEST") + 1] == "0.5"
    args = load_tool("predict").parse_args([
        "--config-file", CONFIG, "--output", "o", "--input", "a.png",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_list(args.opts)
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05


def _pictures(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return sorted(str(path) for path in folder.glob("*.png"))


def test_inputs_are_never_overwritten_and_results_survive_a_crash(tmp_path, monkeypatch):
    """--output that holds the inputs is refused (the drawings would replace them); a picture
    too thin to resize is skipped with its reason; a crash keeps the results done so far."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    cfg = tiny_cfg("MODEL.WEIGHTS", weights, "DATASETS.TEST", "()")
    paths = _pictures(tmp_path / "in", [(64, 64), (1, 200), (48, 64), (64, 40)])
    before = [Path(p).read_bytes() for p in paths]
    with pytest.raises(DatasetError, match="would overwrite them"):
        predict_module.predict(cfg, paths, str(tmp_path / "in"))
    assert [Path(p).read_bytes() for p in paths] == before

    summary = predict_module.predict(cfg, paths, str(tmp_path / "out"), batch_size=2)
    assert summary["pictures"] == 3
    assert summary["skipped"] == [(paths[1], "is too thin: a side would resize to 0 pixels")]

    add = predict_module.PredictionWriter.add
    calls = []

    def crash_at_the_third(self, picture, instances):
        calls.append(picture.path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        add(self, picture, instances)
    monkeypatch.setattr(predict_module.PredictionWriter, "add", crash_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        predict_module.predict(cfg, paths, str(tmp_path / "crash"), batch_size=1)
    results, images = read_outputs(tmp_path / "crash")
    assert [img["file_name"] for img in images["images"]] == [paths[0], paths[2]]
    assert {r["image_id"] for r in results} <= {img["id"] for img in images["images"]}


@pytest.mark.parametrize("sizes, scale, drawn_shape, warning", [
    # 64 px at 33280 x 33280: more than OpenCV reads (the Visualizer ran out of memory)
    ([(64, 64), (4, 4)], 520, (2080, 2080, 3), "at --scale 520 it would be 33280 x 33280 pixels"),
    # 32 px at 0.64 x 0.64: an empty canvas, a cv2.error (with results for an image
    # images.json did not list)
    ([(32, 32), (64, 64)], 0.02, (1, 1, 3), "at --scale 0.02 it would be 0.64 x 0.64 pixels, less"),
])
def test_a_picture_that_cannot_be_drawn_keeps_its_detections(tmp_path, caplog, sizes, scale,
                                                            drawn_shape, warning):
    """The first picture cannot be drawn at --scale (a warning, no picture); the second is
    drawn; both have their detections in the json."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    cfg = tiny_cfg("MODEL.WEIGHTS", weights, "DATASETS.TEST", "()",
                   "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)
    paths = _pictures(tmp_path / "in", sizes)
    with caplog.at_level("WARNING"):
        summary = predict_module.predict(cfg, paths, str(tmp_path / "out"), scale=scale)
    assert summary["pictures"] == 2 and summary["undrawn"] == 1
    assert f"{paths[0]!r}: not drawn: {warning}" in caplog.text
    results, images = read_outputs(tmp_path / "out")
    outputs = {img["file_name"]: img["output"] for img in images["images"]}
    assert outputs[paths[0]] is None
    assert cv2.imread(str(tmp_path / "out" / outputs[paths[1]])).shape == drawn_shape
    undrawn = next(img["id"] for img in images["images"] if img["file_name"] == paths[0])
    assert any(r["image_id"] == undrawn for r in results)


def test_pictures_at_another_size_than_the_json_get_new_ids(tmp_path, caplog):
    """The json says 128 x 128, the files are 64 x 64: boxes are in the files' pixels, so
    the results must not carry the json's ids (scoring them there would be wrong)."""
    json_file = coco_with_gaps(tmp_path / "mine")
    coco = json.loads(json_file.read_text())
    coco["images"][0].update(width=128, height=128)
    json_file.write_text(json.dumps(coco))
    name = "predict_test_resized"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_file), str(tmp_path / "mine"))
    DatasetCatalog.get(name)  # thing_classes and the id map, as training would set them
    weights = save_model(tmp_path / "two.pth", 2)
    cfg = tiny_cfg("MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                   "DATASETS.TEST", f"('{name}',)")
    paths = sorted(str(p) for p in (tmp_path / "mine").glob("*.png"))
    with caplog.at_level("WARNING", logger=predict_module.__name__):
        predict_module.predict(cfg, paths, str(tmp_path / "out"))
    _, images = read_outputs(tmp_path / "out")
    ids = {Path(img["file_name"]).name: img["id"] for img in images["images"]}
    assert ids["1.png"] == 101 and ids["2.png"] == 102 and ids["0.png"] not in (100, 101, 102)
    assert "1 pictures are listed in the dataset's json at another size" in caplog.text


def test_an_output_folder_of_other_files_is_refused_and_its_own_is_reused(
        datasets_root, digits_model, tmp_path, capsys, monkeypatch):
    """--output a training's folder (its config.yaml) or the user's pictures: an error before
    anything is written (default_setup replaced config.yaml, the drawings x.png); a folder an
    earlier prediction wrote takes the next one."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    paths = _pictures(tmp_path / "in", [(64, 64)])
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, data in (("config.yaml", b"the training's config"), ("x.png", b"my picture")):
        (mine / name).write_bytes(data)
    argv = ["--config-file", CONFIG, "--input", *paths, *TINY, "MODEL.WEIGHTS", digits_model]
    error = _user_error(capsys, argv[:4] + ["--output", mine] + argv[4:])
    assert "holds 2 files that predict did not write (e.g. 'config.yaml')" in error
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == {
        "config.yaml": b"the training's config", "x.png": b"my picture"}
    out, extra = tmp_path / "out", tmp_path / "extra.png"
    cv2.imwrite(str(extra), np.random.default_rng(1).integers(0, 256, (48, 48, 3), np.uint8))
    load_tool("predict").run(list(map(str, argv[:4] + ["--output", out, "--input", extra] + argv[4:])))
    # the second run, on other pictures, into the first's folder: the first moves whole beside
    # it (its drawing of extra.png stayed, unlisted in the new images.json)
    # (log.txt aside: in one process detectron2's logger keeps appending to the moved file)
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "log.txt"}
    load_tool("predict").run(list(map(str, argv[:4] + ["--output", out] + argv[4:])))
    (kept,) = tmp_path.glob("out.before-*")
    assert {p.name: p.read_bytes() for p in kept.iterdir() if p.name != "log.txt"} == first
    said = capsys.readouterr()  # detectron2's setup_logger prints to stdout
    assert "extra.png" in first and "held an earlier prediction: kept in" in said.out + said.err
    drawn = [image["output"] for image in read_outputs(out)[1]["images"]]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(drawn) and len(drawn) == 1
    # files of the user's put in the prediction's folder since: refused, not replaced
    # (the mark made every file there predict's)
    (out / "0.png").write_bytes(b"my holiday picture")  # a drawn name: kept with the run
    load_tool("predict").run(list(map(str, argv[:4] + ["--output", out] + argv[4:])))
    assert b"my holiday picture" in [p.read_bytes() for p in tmp_path.glob("out.before-*/0.png")]
    assert (out / "0.png").read_bytes() != b"my holiday picture"  # predict's name
    (tmp_path / "out" / "holiday.png").write_bytes(b"my holiday picture")
    (tmp_path / "out" / "notes.txt").write_bytes(b"mine")
    error = _user_error(capsys, argv[:4] + ["--output", tmp_path / "out"] + argv[4:])
    assert "holds 2 files that predict did not write (e.g. 'holiday.png')" in error
    assert (tmp_path / "out" / "holiday.png").read_bytes() == b"my holiday picture"
    a_file = tmp_path / "a_file"  # was: FileExistsError / NotADirectoryError tracebacks
    a_file.write_bytes(b"mine")
    error = _user_error(capsys, argv[:4] + ["--output", a_file] + argv[4:])
    assert f"'{a_file}' is a file, not a folder" in error and a_file.read_bytes() == b"mine"
    error = _user_error(capsys, argv[:4] + ["--output", a_file / "sub"] + argv[4:])
    assert f"'{a_file / 'sub'}' cannot be made as a folder (Not a directory)" in error


def test_an_output_given_with_a_trailing_slash_is_kept_beside_it(tmp_path, capsys):
    """README's `--output out/`, run twice: the earlier prediction was to move to
    `out/.before-<time>`, inside itself, and the second run stopped with "cannot be kept
    (Invalid argument)". Now it moves beside the folder, as without the slash."""
    paths = _pictures(tmp_path / "in", [(64, 64)])
    argv = _tiny_args(save_model(tmp_path / "t.pth", 10), paths, f"{tmp_path / 'out'}/")
    load_tool("predict").run(list(map(str, argv)))
    first = (tmp_path / "out" / "images.json").read_bytes()
    load_tool("predict").run(list(map(str, argv)))
    (kept,) = tmp_path.glob("out.before-*")
    assert (kept / "images.json").read_bytes() == first
    assert (tmp_path / "out" / "images.json").is_file()


def test_test_time_augmentation_is_named_as_not_applied(datasets_root, digits_model, tmp_path,
                                                        capsys, monkeypatch):
    """TEST.AUG.ENABLED (which tools/train_net.py's evaluation applies) in a config given to
    predict: it runs the model once per picture, as DefaultPredictor; a warning says so."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    argv = ["--config-file", CONFIG, "--input", *_pictures(tmp_path / "in", [(64, 64)]),
            "--output", tmp_path / "out", *TINY, "MODEL.WEIGHTS", digits_model,
            "TEST.AUG.ENABLED", True]
    load_tool("predict").run(list(map(str, argv)))
    said = capsys.readouterr()
    assert "test-time augmentation is run by tools/train_net.py's evaluation only" in (
        said.out + said.err)


def test_a_refused_prediction_leaves_the_earlier_one_in_place(datasets_root, digits_model,
                                                               tmp_path, capsys, monkeypatch):
    """A re-run into a prediction's folder that is refused before its first result (a
    missing MODEL.WEIGHTS, a class count the weights do not have) moved the earlier
    prediction to out.before-<time> all the same, and the next try moved that one's
    config.yaml and log.txt aside again: three typos, three folders. Now the folder stays
    as it was. No input skipped: no "Skipped 0 inputs." line."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", *_pictures(tmp_path / "in", [(64, 64)]),
            "--output", out, *TINY]
    load_tool("predict").run(list(map(str, argv + ["MODEL.WEIGHTS", digits_model])))
    assert "Skipped" not in capsys.readouterr().out
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "log.txt"}
    for refused in (["MODEL.WEIGHTS", tmp_path / "missing.pth"],
                    ["MODEL.WEIGHTS", digits_model, "MODEL.ROI_HEADS.NUM_CLASSES", 3]):
        _user_error(capsys, argv + refused)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "log.txt"} == first
    assert not list(tmp_path.glob("out.before-*"))


def test_a_prediction_that_reads_no_input_leaves_the_earlier_one_in_place(tmp_path, capsys):
    """A re-run whose inputs all fail to decode ("no input could be read", exit 2) moved the
    earlier prediction to out.before-<time> and left in out/ empty json files, which read as
    a prediction that found nothing. Now out/ stays as it was, as for the other refusals."""
    weights, out = save_model(tmp_path / "t.pth", 10), tmp_path / "out"
    load_tool("predict").run(list(map(str, _tiny_args(weights, _pictures(tmp_path / "in",
                                                                          [(64, 64)]), out))))
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "log.txt"}
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    error = _user_error(capsys, _tiny_args(weights, [tmp_path / "bad.png"], out))
    assert error.startswith("error: no input could be read")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "log.txt"} == first
    assert not list(tmp_path.glob("out.before-*"))


def test_pictures_of_other_sizes_get_defaultpredictors_detections(datasets_root, digits_model,
                                                                   tmp_path, monkeypatch):
    """One --batch-size 8 run over pictures of three input sizes: detectron2 pads a batch to
    its largest picture, which changed the smaller ones' detections; batches now hold one
    size, and each picture's detections are DefaultPredictor's."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    val = sorted((datasets_root / "digits/images/val").iterdir())
    a, b = (cv2.imread(str(p)) for p in val[:2])
    folder = tmp_path / "mixed"
    folder.mkdir()
    pictures = {"0_square.png": a, "1_wide.png": np.concatenate([a, b], axis=1),
                "2_square.png": b, "3_short.png": a[12:52]}
    for name, picture in pictures.items():
        cv2.imwrite(str(folder / name), picture)
    sizes = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]
    out, extra = tmp_path / "out", tmp_path / "extra.png"
    cv2.imwrite(str(extra), np.random.default_rng(1).integers(0, 256, (48, 48, 3), np.uint8))
    load_tool("predict").run(["--config-file", CONFIG, "--input", str(folder), "--output", str(out),
                              "--confidence-threshold", str(THRESHOLD), "--batch-size", "8",
                              *TINY, *sizes, "MODEL.WEIGHTS", digits_model])
    results, images = read_outputs(out)
    category_ids = [c["id"] for c in images["categories"]]
    predictor = DefaultPredictor(tiny_cfg(*sizes, "MODEL.WEIGHTS", digits_model,
                                          "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(THRESHOLD)))
    compared = 0
    for image in images["images"]:
        picture = pictures[Path(image["file_name"]).name]
        expected = predictor(picture)["instances"]
        got = as_instances(results, image["id"], picture.shape[:2], category_ids)
        assert detection_error(got, expected) < 1e-4, image["file_name"]
        compared += len(expected)
    assert compared == len(results) > 0 and len(images["images"]) == 4


def _tiny_args(weights, inputs, out):
    return ["--config-file", CONFIG, "--input", *inputs, "--output", out, *TINY,
            "MODEL.WEIGHTS", weights, "DATASETS.TEST", "()"]


def test_a_sigterm_keeps_the_results_done(tmp_path):
    """A plain `kill` (a scheduler's SIGTERM) ended predict without its finally: no results
    json at all, while Ctrl-C wrote them. Now both write what was predicted."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    paths = _pictures(tmp_path / "in", [(64, 64)] * 300)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools/predict.py"), "--batch-size", "1",
                             *map(str, _tiny_args(weights, [tmp_path / "in"], out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # two drawings: the first picture's entry is recorded before the second is drawn (on the
    # first alone the signal could come between its drawing and its entry: none listed)
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(list(out.glob("*.png"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in stderr, stderr[-2000:]
    results, images = read_outputs(out)
    assert 1 <= len(images["images"]) < len(paths)
    assert {r["image_id"] for r in results} <= {img["id"] for img in images["images"]}


def test_a_second_prediction_into_a_folder_in_use_is_refused(tmp_path, capsys):
    """Two predictions into one --output at once: each replaced the other's json files and
    pictures of the same names, and both exited 0."""
    out = tmp_path / "out"
    out.mkdir()
    (out / predict_module.PREDICT_MARK).write_text("an earlier prediction's")
    with lock_held_elsewhere(out) as holder:
        paths = _pictures(tmp_path / "in", [(64, 64)])
        error = _user_error(capsys, _tiny_args(save_model(tmp_path / "t.pth", 10), paths, out))
        assert f"process {holder.pid} writes in it" in error
    assert sorted(p.name for p in out.iterdir()) == [".lock", predict_module.PREDICT_MARK]


def test_names_that_are_not_utf8_are_named_not_a_crash(tmp_path, capsys):
    """OpenCV crashed (exit 139, nothing written) on a picture, or an --output, whose name
    is not UTF-8 (a camera card's, an old archive's)."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    folder = tmp_path / "in"
    [good] = _pictures(folder, [(64, 64)])
    bad = os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png")  # Latin-1, not UTF-8
    with open(bad, "wb") as f:
        f.write(Path(good).read_bytes())
    summary = load_tool("predict").run(list(map(str, _tiny_args(weights, [folder],
                                                                tmp_path / "out"))))
    assert summary["pictures"] == 1
    assert f"{bad!r} has a name that is not UTF-8" in capsys.readouterr().out
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/out\xff")
    error = _user_error(capsys, _tiny_args(weights, [good], out))
    assert "the name is not UTF-8" in error and not os.path.exists(out)


def test_a_picture_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """A full disk: OpenCV's imwrite returned False (ignored: images.json listed pictures
    that were not there), then the json's OSError was a traceback."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    paths = _pictures(tmp_path / "in", [(64, 64)])
    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)
    error = _user_error(capsys, _tiny_args(weights, paths, tmp_path / "out"))
    assert "0.png: OpenCV could not write the drawn picture (a full disk?)" in error


def test_a_test_size_below_zero_is_named(tmp_path, capsys):
    """INPUT.MIN_SIZE_TEST -5 was reported as every picture being "too thin"."""
    paths = _pictures(tmp_path / "in", [(64, 64)])
    error = _user_error(capsys, _tiny_args(save_model(tmp_path / "t.pth", 10), paths,
                                           tmp_path / "out") + ["INPUT.MIN_SIZE_TEST", "-5"])
    assert "INPUT.MIN_SIZE_TEST=-5 is not valid: expected a whole number >= 0" in error


def test_a_ctrl_c_while_drawing_keeps_the_two_json_files_consistent(tmp_path, monkeypatch):
    """A Ctrl-C (or SIGTERM) while the second picture is drawn: its detections were in
    coco_instances_results.json under an image_id that images.json did not list."""
    from detectron2.utils.visualizer import Visualizer

    weights = save_model(tmp_path / "tiny.pth", 10)
    paths = _pictures(tmp_path / "in", [(64, 64)] * 3)
    draw, calls = Visualizer.draw_instance_predictions, []

    def ctrl_c_at_the_second(self, predictions):
        calls.append(len(predictions))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return draw(self, predictions)
    monkeypatch.setattr(Visualizer, "draw_instance_predictions", ctrl_c_at_the_second)
    cfg = tiny_cfg("MODEL.WEIGHTS", weights, "DATASETS.TEST", "()",
                   "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(THRESHOLD))
    with pytest.raises(KeyboardInterrupt):
        predict_module.predict(cfg, paths, str(tmp_path / "out"), batch_size=1)
    results, images = read_outputs(tmp_path / "out")
    assert [img["file_name"] for img in images["images"]] == paths[:1]
    assert calls[1] > 0  # the interrupted picture had detections to leave behind
    assert {r["image_id"] for r in results} == {images["images"][0]["id"]}
    expected = DefaultPredictor(cfg)(read_image(paths[0], format="BGR"))["instances"]
    got = as_instances(results, images["images"][0]["id"], (64, 64), list(range(10)))
    assert detection_error(got, expected) < 1e-4


def test_keypoints_are_drawn_where_defaultpredictor_puts_them(tmp_path, monkeypatch):
    """A keypoint R-CNN: detectron2's instances_to_coco_json moves pred_keypoints by -0.5
    px in place (COCO's pixel indices), and the picture was drawn after it, half a pixel
    up and left. The json keeps COCO's convention (detectron2's evaluator writes the same)."""
    from detectron2.utils.visualizer import Visualizer

    keypoints = ["MODEL.KEYPOINT_ON", "True", "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "(8,)",
                 "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "3", "MODEL.ROI_HEADS.NUM_CLASSES", "1"]
    torch.manual_seed(0)
    model = spread_class_scores_(randomize_norms_(build_model(tiny_cfg(*keypoints))))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("keypoints")
    cfg = tiny_cfg(*keypoints, "MODEL.WEIGHTS", str(tmp_path / "keypoints.pth"),
                   "DATASETS.TEST", "()", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    drawn, draw = [], Visualizer.draw_instance_predictions
    monkeypatch.setattr(Visualizer, "draw_instance_predictions", lambda self, predictions: (
        drawn.append(predictions.pred_keypoints.clone()), draw(self, predictions))[1])
    paths = _pictures(tmp_path / "in", [(64, 64)])
    predict_module.predict(cfg, paths, str(tmp_path / "out"))
    expected = DefaultPredictor(cfg)(read_image(paths[0], format="BGR"))["instances"].pred_keypoints
    assert len(expected) > 0
    torch.testing.assert_close(drawn[0], expected, rtol=0, atol=1e-4)
    results, _ = read_outputs(tmp_path / "out")
    written = torch.tensor([r["keypoints"] for r in results]).reshape(expected.shape)
    torch.testing.assert_close(written, expected - torch.tensor([0.5, 0.5, 0.0]), rtol=0, atol=1e-4)


def test_a_model_that_outputs_no_detections_is_named(tmp_path, capsys):
    """A ProposalNetwork (detectron2's outputs: {"proposals": ...}) ended in a KeyError
    traceback once its weights were loaded and the first batch had run."""
    proposals = ["MODEL.META_ARCHITECTURE", "ProposalNetwork"]
    model = build_model(tiny_cfg(*proposals))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("rpn")
    assert "proposals" in model.eval()([{"image": torch.zeros(3, 64, 64)}])[0]
    paths = _pictures(tmp_path / "in", [(64, 64)])
    error = _user_error(capsys, _tiny_args(str(tmp_path / "rpn.pth"), paths, tmp_path / "out")
                        + proposals)
    assert error.startswith("error: MODEL.META_ARCHITECTURE='ProposalNetwork' is not valid: "
                            "expected a detector") and "outputs proposals" in error


def test_a_drawing_at_the_pixel_limit_is_drawn(tmp_path, monkeypatch):
    """The limit counts the Visualizer's canvas (each side x --scale, rounded down): 40 px at
    --scale 1.5875 (63.5 px) is a 63 x 63 drawing (3969 pixels); round() counted 64 x 64
    (4096) and refused it under a limit of 4000."""
    monkeypatch.setattr(predict_module, "MAX_DRAWN_PIXELS", 4000)
    weights = save_model(tmp_path / "tiny.pth", 10)
    cfg = tiny_cfg("MODEL.WEIGHTS", weights, "DATASETS.TEST", "()")
    paths = _pictures(tmp_path / "in", [(40, 40)])
    summary = predict_module.predict(cfg, paths, str(tmp_path / "out"), scale=1.5875)
    assert summary["undrawn"] == 0
    _, images = read_outputs(tmp_path / "out")
    drawn = cv2.imread(str(tmp_path / "out" / images["images"][0]["output"]))
    assert drawn.shape == (63, 63, 3)  # the Visualizer's canvas: what the limit counts


@pytest.mark.parametrize("over", [False, True], ids=["at_the_limit", "one_past_it"])
def test_the_pixel_limit_counts_the_visualizers_own_canvas(tmp_path, monkeypatch, over):
    """detectron2's VisImage sizes its figure side x scale + 0.01: 100 px at --scale 0.9999
    is a 100 x 100 drawing. int(99.99) counted 99 x 99 (9801 pixels), and drew it past a
    limit of one pixel less than the canvas."""
    from detectron2.utils.visualizer import Visualizer

    scale = 0.9999
    canvas = Visualizer(np.zeros((100, 100, 3), np.uint8), None, scale=scale).output.get_image()
    limit = canvas.shape[0] * canvas.shape[1] - int(over)
    monkeypatch.setattr(predict_module, "MAX_DRAWN_PIXELS", limit)
    weights = save_model(tmp_path / "tiny.pth", 10)
    cfg = tiny_cfg("MODEL.WEIGHTS", weights, "DATASETS.TEST", "()")
    paths = _pictures(tmp_path / "in", [(100, 100)])
    summary = predict_module.predict(cfg, paths, str(tmp_path / "out"), scale=scale)
    assert summary["undrawn"] == int(over)
    if not over:
        _, images = read_outputs(tmp_path / "out")
        drawn = cv2.imread(str(tmp_path / "out" / images["images"][0]["output"]))
        assert drawn.shape == canvas.shape


def test_a_kill_between_the_two_json_files_leaves_no_unexplained_results(tmp_path):
    """SIGKILL just before the results json's rename: images.json, which says what the
    results' image ids mean, is already whole (it was written second: a kill between the
    two left results whose ids nothing explained)."""
    weights = save_model(tmp_path / "tiny.pth", 10)
    _pictures(tmp_path / "in", [(64, 64)] * 2)
    out = tmp_path / "out"
    runner = Path(__file__).parents[1] / "reliability" / "killed_before.py"
    proc = subprocess.run([sys.executable, str(runner), "coco_instances_results.json",
                           str(ROOT / "tools/predict.py"),
                           *map(str, _tiny_args(weights, [tmp_path / "in"], out))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "coco_instances_results.json").exists()
    assert len(json.loads((out / "images.json").read_text())["images"]) == 2
