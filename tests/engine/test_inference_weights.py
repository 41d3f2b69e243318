"""Weights to evaluate, predict with or export must be the model's whole, and of its classes.

- Every key of the model comes from the file with its shape: detectron2 leaves a head of
  another shape or class count at its random start with warnings only.
- A detection checkpoint stores the class names of its training data (DATASETS.TRAIN's
  thing_classes); an evaluation, prediction, export or resume on a dataset whose classes
  differ in name or order is refused, since each label would be scored or named as another.
  The reordered set is a --dataset json written here from the digits json, the categories
  renamed: detectron2's own load gives it the other thing_classes.
"""
import json
import re
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from resnext_det.data import register_digits
from resnext_det.data.digits import detection_paths
from tests.engine.test_train_net import CONFIG, TINY, _user_error
from tests.helpers import load_tool


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    """One iteration on digits_train; returns (output folder, digits classes)."""
    register_digits(datasets_root / "digits")
    out = tmp_path_factory.mktemp("trained")
    load_tool("train_net").run(["--config-file", CONFIG, *map(str, TINY), "SOLVER.MAX_ITER", "1",
                                "OUTPUT_DIR", str(out)])
    return out, list(MetadataCatalog.get("digits_train").thing_classes)


@pytest.fixture
def renamed(datasets_root, tmp_path):
    """--dataset NAME=JSON:IMAGES DATASETS.TEST "('NAME',)": digits_val with its category
    names in reversed order, under a new name in each test."""
    json_file, images = detection_paths(datasets_root / "digits", "val")
    data = json.loads(open(json_file).read())
    names = [c["name"] for c in data["categories"]][::-1]
    for category, name in zip(data["categories"], names):
        category["name"] = name
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(data))
    name = f"renamed_{uuid.uuid4().hex[:8]}"
    return ["--dataset", f"{name}={path}:{images}", "DATASETS.TEST", f"('{name}',)"]


def test_checkpoints_store_the_training_classes(trained):
    out, classes = trained
    assert classes == [str(d) for d in range(10)]  # the digits' names, detectron2's metadata
    stored = torch.load(out / "model_final.pth", weights_only=False)
    assert stored["classes"] == classes
    assert stored["input"] == {"INPUT.FORMAT": "RGB", "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
                               "MODEL.PIXEL_STD": [58.395, 57.12, 57.375]}  # Base-ResNeXt.yaml's


def test_evaluation_on_other_classes_is_an_error(trained, renamed, tmp_path, capsys):
    out, _ = trained
    error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", *renamed, *map(str, TINY),
                                 "MODEL.WEIGHTS", str(out / "model_final.pth"),
                                 "OUTPUT_DIR", str(tmp_path / "eval")])
    assert re.search(r"model_final.pth: the classes are in another order \(class 0 is '0' in "
                     r"the checkpoint, '9' in DATASETS.TEST 'renamed_\w+'\)", error), error
    assert not list((tmp_path / "eval").glob("inference/*/coco_metrics.json"))


def test_prediction_and_export_on_other_classes_are_errors(trained, renamed, datasets_root,
                                                           tmp_path, capsys):
    out, _ = trained
    images = detection_paths(datasets_root / "digits", "val")[1]
    weights = ["MODEL.WEIGHTS", str(out / "model_final.pth")]
    # predict registers the --dataset json; export (which has no --dataset) finds it so
    for tool, argv in (("predict", ["--input", images, "--output", tmp_path / "p", *renamed]),
                       ("export_model", ["--output", tmp_path / "x", "--format", "torchscript",
                                         "--export-method", "tracing", *renamed[2:]])):
        with pytest.raises(SystemExit) as exit_:
            load_tool(tool).run(["--config-file", CONFIG, *map(str, argv), *map(str, TINY),
                                 *weights])
        assert exit_.value.code == 2, tool
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "the classes are in another order" in error and "DATASETS.TEST[0] 'renamed_" in error


def test_resume_on_other_classes_is_an_error(trained, renamed, tmp_path, capsys):
    import shutil

    out, _ = trained
    shutil.copytree(out, tmp_path / "run")
    (tmp_path / "run" / ".lock").unlink(missing_ok=True)
    error = _user_error(capsys, ["--config-file", CONFIG, "--resume", *renamed[:2],
                                 "DATASETS.TRAIN", renamed[3], *renamed[2:], *map(str, TINY),
                                 "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path / "run")])
    assert "model_final.pth: the classes are in another order" in error
    assert "in DATASETS.TRAIN 'renamed_" in error and "Resume on the data" in error


def test_lazy_evaluation_on_other_classes_is_an_error(trained, renamed, tmp_path, capsys):
    """The .py config path: dataloader.test.dataset.names of other classes."""
    from tests.engine.test_lazy import DIGITS, TINY_DATA, TINY_MODEL

    out, _ = trained
    with pytest.raises(SystemExit) as exit_:
        load_tool("train_net").run([
            "--config-file", DIGITS, "--eval-only", *renamed[:2], *TINY_MODEL, *TINY_DATA,
            f"dataloader.test.dataset.names={renamed[3][2:-3]}",
            f"train.init_checkpoint={out / 'model_final.pth'}", f"train.output_dir={tmp_path}"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model_final.pth: the classes are in another order" in error
    assert "in dataloader.test.dataset.names 'renamed_" in error


def test_prediction_without_a_dataset_names_the_weights_classes(trained, datasets_root,
                                                                tmp_path):
    """DATASETS.TEST empty: the pictures and images.json name the classes the weights store
    (they were indices)."""
    out, classes = trained
    images = detection_paths(datasets_root / "digits", "val")[1]
    load_tool("predict").run(["--config-file", CONFIG, "--input", images, "--output",
                              str(tmp_path / "p"), *map(str, TINY), "DATASETS.TEST", "()",
                              "MODEL.WEIGHTS", str(out / "model_final.pth")])
    written = json.loads((tmp_path / "p" / "images.json").read_text())
    assert [c["name"] for c in written["categories"]] == classes
    assert [c["id"] for c in written["categories"]] == list(range(10))  # the model's indices


@pytest.mark.parametrize("tool, options, overrides, key", [
    ("train_net", ["--eval-only"], ["MODEL.ROI_BOX_HEAD.FC_DIM", "64"],
     "roi_heads.box_head.fc1.weight"),
    ("predict", [], ["MODEL.ROI_HEADS.NUM_CLASSES", "3", "DATASETS.TEST", "()"],
     "roi_heads.box_predictor.cls_score.weight"),
    ("export_model", ["--format", "torchscript", "--export-method", "tracing"],
     ["MODEL.ROI_BOX_HEAD.FC_DIM", "64"], "roi_heads.box_head.fc1.weight"),
])
def test_weights_that_leave_layers_random_are_an_error(trained, datasets_root, tmp_path, capsys,
                                                       tool, options, overrides, key):
    """A config of another head or class count than the training's: those layers would be
    evaluated / drawn / exported at their random start."""
    out, _ = trained
    images = detection_paths(datasets_root / "digits", "val")[1]
    output = str(tmp_path / "o")
    where = {"train_net": [], "predict": ["--input", images, "--output", output],
             "export_model": ["--output", output]}[tool]
    tail = ["OUTPUT_DIR", output] if tool == "train_net" else []
    with pytest.raises(SystemExit) as exit_:
        load_tool(tool).run(["--config-file", CONFIG, *options, *where, *map(str, TINY),
                             "MODEL.WEIGHTS", str(out / "model_final.pth"), *overrides, *tail])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "model_final.pth: these weights do not fill the model the config builds" in error
    assert repr(key) in error and "Use the config the weights were trained with" in error
    assert not list(tmp_path.glob("o/**/coco_metrics.json")) and not list(tmp_path.glob("o/*.ts"))


def test_a_detector_of_other_widths_converts_to_its_backbone(trained, tmp_path):
    """tools/convert_weights.py on a train_net.py checkpoint of widths other than the
    paper's 64 / 256 (stem 8, res2 16 here; the digits demo's 32 / 64): every ResNeXt
    tensor comes out as the detector holds it (it was 121 key problems)."""
    import pickle

    out, _ = trained
    assert load_tool("convert_weights").main([str(out / "model_final.pth"),
                                              str(tmp_path / "x.pkl")]) in (None, 0)
    converted = pickle.loads((tmp_path / "x.pkl").read_bytes())["model"]
    detector = torch.load(out / "model_final.pth", weights_only=False)["model"]
    prefix = "backbone.bottom_up."
    trunk = {k[len(prefix):]: v for k, v in detector.items()
             if k.startswith(prefix) and not k.endswith("num_batches_tracked")}
    assert converted["stem.conv1.weight"].shape[0] == 8 and set(converted) == set(trunk)
    for key, value in trunk.items():
        np.testing.assert_array_equal(converted[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("tool, change", [
    ("train_net", ["INPUT.FORMAT", "BGR"]),
    ("predict", ["MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]),
    ("export_model", ["MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]"]),
])
def test_weights_trained_on_other_input_are_an_error(trained, datasets_root, tmp_path, capsys,
                                                     tool, change):
    """Channels in the other order, or other pixel statistics, than the training's: the
    detector saw other pixels than it learned on, and detected little, silently."""
    out, _ = trained
    images = detection_paths(datasets_root / "digits", "val")[1]
    output = str(tmp_path / "o")
    where = {"train_net": ["--eval-only"], "predict": ["--input", images, "--output", output],
             "export_model": ["--output", output]}[tool]
    tail = ["OUTPUT_DIR", output] if tool == "train_net" else []
    with pytest.raises(SystemExit) as exit_:
        load_tool(tool).run(["--config-file", CONFIG, *where, *map(str, TINY), "MODEL.WEIGHTS",
                             str(out / "model_final.pth"), *change, *tail])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {change[0]}=") and "model_final.pth was trained with" in error


def test_checks_that_need_classes_leave_a_proposal_network_alone(datasets_root, renamed,
                                                                  tmp_path):
    """An RPN's outputs carry no class: its checkpoints store none, and its proposals may be
    scored on data of other classes (box_proposals AR)."""
    out = tmp_path / "rpn"
    rpn = ["MODEL.META_ARCHITECTURE", "ProposalNetwork"]
    load_tool("train_net").run(["--config-file", CONFIG, *map(str, TINY), *rpn,
                                "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)])
    assert "classes" not in torch.load(out / "model_final.pth", weights_only=False)
    load_tool("train_net").run(["--config-file", CONFIG, "--eval-only", *renamed, *map(str, TINY),
                                *rpn, "MODEL.WEIGHTS", str(out / "model_final.pth"),
                                "OUTPUT_DIR", str(tmp_path / "e")])
    assert list((tmp_path / "e").glob("inference/*/coco_metrics.json"))


def test_a_training_that_evaluates_on_other_classes_is_an_error(datasets_root, renamed,
                                                                tmp_path, capsys):
    """DATASETS.TEST of other classes than DATASETS.TRAIN: every evaluation of the run
    scored each class as another (the --eval-only of its checkpoint is refused)."""
    error = _user_error(capsys, ["--config-file", CONFIG, *renamed, *map(str, TINY),
                                 "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "run")])
    assert re.search(r"the classes are in another order \(class 0 is '0' in DATASETS.TRAIN, "
                     r"'9' in DATASETS.TEST 'renamed_\w+'\); the evaluations would score", error)
    assert not (tmp_path / "run" / "model_final.pth").exists()


def test_data_of_other_classes_is_named_before_the_heads(trained, datasets_root, tmp_path,
                                                         capsys):
    """The training's config with NUM_CLASSES 3 for a 3-class json: the cause is the data's
    classes, not the config (the whole-model error said "use the training's config")."""
    out, _ = trained
    json_file, images = detection_paths(datasets_root / "digits", "val")
    data = json.loads(open(json_file).read())
    data["categories"] = [{"id": i, "name": n} for i, n in ((1, "cat"), (2, "dog"), (3, "bird"))]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] <= 3]
    (tmp_path / "three.json").write_text(json.dumps(data))
    name = f"three_{uuid.uuid4().hex[:8]}"
    error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", "--dataset",
                                 f"{name}={tmp_path / 'three.json'}:{images}", "DATASETS.TEST",
                                 f"('{name}',)", *map(str, TINY), "MODEL.ROI_HEADS.NUM_CLASSES",
                                 "3", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                                 "OUTPUT_DIR", str(tmp_path / "e")])
    assert "model_final.pth: the classes differ (only in the checkpoint: ['0', '1'" in error


def test_a_lazy_evaluation_names_an_undecodable_picture(trained, datasets_root, tmp_path,
                                                        capsys):
    """The .py config's test loader is guarded as the YAML one: a truncated picture stopped
    the evaluation with a bare OSError."""
    import shutil

    from resnext_det.data import register_digits
    from tests.engine.test_lazy import DIGITS, TINY_DATA, TINY_MODEL

    out, _ = trained
    shutil.copytree(datasets_root / "digits", tmp_path / "digits")
    register_digits(tmp_path / "digits")
    bad = sorted((tmp_path / "digits/images/val").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:200])
    try:
        with pytest.raises(SystemExit) as exit_:
            load_tool("train_net").run([
                "--config-file", DIGITS, "--eval-only", *TINY_MODEL, *TINY_DATA,
                f"train.init_checkpoint={out / 'model_final.pth'}",
                f"train.output_dir={tmp_path / 'e'}"])
    finally:
        register_digits(datasets_root / "digits")
    assert exit_.value.code == 2
    assert f"Evaluation image '{bad}' cannot be read" in capsys.readouterr().err


def test_resume_with_other_input_is_an_error(trained, tmp_path, capsys):
    """A resumed run fed BGR for RGB would go on learning from other pixels than it began."""
    import shutil

    out, _ = trained
    shutil.copytree(out, tmp_path / "run")
    (tmp_path / "run" / ".lock").unlink(missing_ok=True)
    error = _user_error(capsys, ["--config-file", CONFIG, "--resume", *map(str, TINY),
                                 "INPUT.FORMAT", "BGR", "SOLVER.MAX_ITER", "2",
                                 "OUTPUT_DIR", str(tmp_path / "run")])
    assert error.startswith("error: INPUT.FORMAT='BGR' is not valid: expected 'RGB', the value ")
    assert "model_final.pth was trained with" in error


def test_a_missing_weights_file_to_infer_with_offers_no_training_from_scratch(tmp_path):
    """Evaluate, predict and export need trained weights: the error for a missing file does
    not advise MODEL.WEIGHTS '' ("to train from scratch"), which each of them refuses next."""
    from detectron2.config import get_cfg

    from resnext_det import ConfigError, add_resnext_config
    from resnext_det.engine.checks import check_weights, check_weights_to_evaluate
    from resnext_det.engine.predict import BatchPredictor
    from resnext_det.export.main import load_model

    cfg = add_resnext_config(get_cfg())
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.WEIGHTS = str(tmp_path / "no_such_model.pth")
    for infer in (check_weights_to_evaluate, BatchPredictor.from_config, load_model):
        with pytest.raises(ConfigError) as error:
            infer(cfg)
        message = str(error.value)
        assert "MODEL.WEIGHTS" in message and "no_such_model.pth" in message, message
        assert "from scratch" not in message and "MODEL.WEIGHTS ''" not in message, message
    with pytest.raises(ConfigError, match="MODEL.WEIGHTS '' to train from scratch"):
        check_weights(cfg)  # a training may start from scratch
