"""tools/demo.py's pipeline on a tiny budget: set, training, COCO AP, pictures."""
import json

import cv2
import pytest
from detectron2.data import MetadataCatalog

from resnext_det.evaluation.coco import RESULTS_FILE
from tests.engine.test_train_net import TINY
from tests.helpers import load_tool, pycocotools_stats


def test_demo_writes_metrics_and_pictures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    demo = load_tool("demo")
    opts = [*map(str, TINY), "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(tmp_path / "demo")]
    summary = demo.run_demo(demo.DEMO_CONFIG, opts, dataset=dict(
        num_train=8, num_val=4, image_size=64, digit_sizes=(12, 24), cls_copies=1))
    # 3 iterations learn nothing: the AP it prints is pycocotools' for the detections it wrote
    written = json.loads((tmp_path / "demo" / "inference" / "digits_val" / RESULTS_FILE).read_text())
    expected = pycocotools_stats(MetadataCatalog.get("digits_val").json_file, written)
    assert (summary["AP"], summary["AP50"]) == pytest.approx((expected["AP"], expected["AP50"]),
                                                             abs=1e-4)
    for key in ("predictions", "curves"):
        image = cv2.imread(str(summary[key]))
        assert image is not None and image.shape[0] > 100, key
    # the grid: the 4 val images of 64 px, drawn at scale 2, in one row of 4 columns
    assert cv2.imread(str(summary["predictions"])).shape == (128, 512, 3)
    assert (tmp_path / "datasets" / "digits" / "manifest.json").is_file()
    assert "Demo: box AP" in capsys.readouterr().out
    # the tool registered the set it built (import resnext_det registers none)
    assert MetadataCatalog.get("digits_val").image_root == str(
        (tmp_path / "datasets" / "digits" / "images" / "val").resolve())


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch):
    """OUTPUT_DIR holding another training's run: its checkpoints, metrics.json and
    config.yaml were replaced by the demo's; now an error before anything is written."""
    from resnext_det.config.errors import ConfigError

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    demo = load_tool("demo")
    run = tmp_path / "my_training"
    run.mkdir()
    for name in ("model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"):
        (run / name).write_text("my training's")
    with pytest.raises(ConfigError, match=r"OUTPUT_DIR=.*my_training.* 4 files the demo did not"):
        demo.run_demo(demo.DEMO_CONFIG, [*map(str, TINY), "SOLVER.MAX_ITER", "1", "OUTPUT_DIR",
                                         str(run)], dataset=dict(num_train=2, num_val=1,
                                                                 image_size=64, digit_sizes=(12, 24)))
    assert {p.name: p.read_text() for p in run.iterdir()} == {
        name: "my training's" for name in ("model_final.pth", "last_checkpoint", "metrics.json",
                                           "config.yaml")}


def test_an_earlier_demos_folder_is_the_demos(tmp_path):
    """A folder the demo wrote before it marked its folders (predictions.png, curves.png)
    is taken; a training's lock file is not named as a file the demo did not write."""
    from resnext_det.config.errors import ConfigError

    demo = load_tool("demo")
    earlier = tmp_path / "output_demo"
    earlier.mkdir()
    for name in ("predictions.png", "curves.png", "model_final.pth", "metrics.json", ".lock"):
        (earlier / name).write_text("the demo's")
    demo.claim_demo_output(str(earlier))
    assert (earlier / demo.DEMO_MARK).is_file()
    training = tmp_path / "training"
    training.mkdir()
    for name in (".lock", "model_final.pth"):
        (training / name).write_text("a training's")
    with pytest.raises(ConfigError, match=r"it holds 1 files the demo did not write, e.g. "
                       r"'model_final.pth'"):
        demo.claim_demo_output(str(training))


def test_the_grid_shows_the_detections_of_the_test_resize(datasets_root, tmp_path, monkeypatch):
    """INPUT.MIN_SIZE_TEST 96 on 64 px val images: the evaluation and predict.py resize
    them to 96 first; the grid drew the model's detections on them at 64."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor
    from detectron2.utils.visualizer import Visualizer

    from resnext_det.data import register_digits
    from resnext_det.utils.testing import detection_error
    from tests.tools.test_predict import save_model, tiny_cfg

    register_digits(datasets_root / "digits")
    cfg = tiny_cfg("INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96", "OUTPUT_DIR",
                   str(tmp_path), "MODEL.WEIGHTS", save_model(tmp_path / "model_final.pth", 10))
    drawn, draw = [], Visualizer.draw_instance_predictions
    monkeypatch.setattr(Visualizer, "draw_instance_predictions", lambda self, predictions: (
        drawn.append(predictions), draw(self, predictions))[1])
    load_tool("demo").draw_demo_predictions(cfg, tmp_path / "predictions.png")
    predictor, records = DefaultPredictor(cfg), DatasetCatalog.get("digits_val")
    assert len(drawn) == len(records) == 4
    for record, got in zip(records, drawn):
        expected = predictor(read_image(record["file_name"], format="BGR"))["instances"]
        expected = expected[expected.scores >= 0.5]  # the grid's threshold
        assert len(expected) > 0 and detection_error(got, expected) < 1e-4, record["file_name"]
