"""tools/train_net.py --dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR: training on a user's COCO json.

The json and its images are written here by hand, not with resnext_det.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers import load_tool

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}, {"id": 5, "name": "five"}]
# A config that leaves NUM_CLASSES unset (detectron2's default, 80): the json decides.
TINY_YAML = f"""_BASE_: "{ROOT}/configs/Base-RCNN-FPN-ResNeXt.yaml"
MODEL:
  WEIGHTS: ""
  RESNEXT: {{TEMPLATE: "X50_2x2d"}}
  RESNETS: {{NORM: "BN", STEM_OUT_CHANNELS: 8, RES2_OUT_CHANNELS: 16}}
  BACKBONE: {{FREEZE_AT: 0}}
  FPN: {{OUT_CHANNELS: 16}}
  ANCHOR_GENERATOR: {{SIZES: [[8], [16], [32], [64], [128]]}}
  RPN: {{PRE_NMS_TOPK_TEST: 100, POST_NMS_TOPK_TEST: 50}}
  ROI_HEADS: {{BATCH_SIZE_PER_IMAGE: 32, SCORE_THRESH_TEST: 0.0}}  # 5 iterations: low scores
  ROI_BOX_HEAD: {{FC_DIM: 32}}
INPUT: {{MIN_SIZE_TRAIN: [64], MAX_SIZE_TRAIN: 64, MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 64,
        RANDOM_FLIP: "none"}}
DATALOADER: {{NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 2, BASE_LR: 0.01, WARMUP_ITERS: 1, STEPS: [], MAX_ITER: 5,
         CHECKPOINT_PERIOD: 100}}
TEST: {{EVAL_PERIOD: 0}}
"""


def write_coco(folder, num_images, bad_box=False, annotations=None):
    """`num_images` 64x64 PNGs with one or two boxes each; the json; returns its path."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    coco = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i in range(num_images):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
        coco["images"].append({"id": 50 + i, "file_name": f"im{i}.png", "width": 64, "height": 64})
        for j, box in enumerate(([4, 6, 20, 24], [30, 28, 16, 30])[: 1 + i % 2]):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": 50 + i,
                                        "category_id": CATEGORIES[(i + j) % 3]["id"], "bbox": box,
                                        "area": box[2] * box[3], "iscrowd": 0})
    if bad_box:
        coco["annotations"][0]["bbox"] = [4, 6, -20, 24]
    if annotations is not None:
        coco["annotations"] = annotations
    (folder / "ann.json").write_text(json.dumps(coco))
    return folder / "ann.json"


def test_trains_on_a_coco_json_with_num_classes_from_it(tmp_path):
    train_json = write_coco(tmp_path / "train", 6, bad_box=True)
    val_json = write_coco(tmp_path / "val", 2)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", tmp_path / "tiny.yaml",
           "--dataset", f"mine_train={train_json}:{tmp_path / 'train'}",
           "--dataset", f"mine_val={val_json}:{tmp_path / 'val'}",
           "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "('mine_val',)", "OUTPUT_DIR", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert max(r["iteration"] for r in records if "total_loss" in r) == 4  # iterations 0..4
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 3  # len(CATEGORIES), not 80
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (3 + 1, 32)
    assert "1 of 9 boxes of DATASETS.TRAIN=('mine_train',)" in proc.stdout + proc.stderr  # skipped
    metrics = json.loads((out / "inference/mine_val/coco_metrics.json").read_text())
    assert {"AP-nine", "AP-two", "AP-five"} <= set(metrics["bbox"])


def test_bad_json_through_the_cli(tmp_path):
    bad = [{"id": 1, "image_id": 50, "category_id": 2, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
           {"id": 2, "image_id": 42, "category_id": 2, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}]
    json_file = write_coco(tmp_path / "train", 1, annotations=bad)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", tmp_path / "tiny.yaml",
           "--dataset", f"mine={json_file}:{tmp_path / 'train'}", "DATASETS.TRAIN", "('mine',)",
           "OUTPUT_DIR", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --dataset annotations '{json_file}': annotations[1] (id 2): has "
                      "image_id 42, which is the id of no entry of 'images'. Fix the file, or "
                      "leave it out of --dataset."]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_num_classes_set_otherwise_is_an_error(tmp_path, capsys):
    json_file = write_coco(tmp_path / "train", 2)
    with pytest.raises(SystemExit) as exit_:
        load_tool("train_net").run([
            "--config-file", str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml"),  # says 10
            "--dataset", f"mine={json_file}:{tmp_path / 'train'}", "DATASETS.TRAIN", "('mine',)",
            "OUTPUT_DIR", str(tmp_path / "run")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: MODEL.ROI_HEADS.NUM_CLASSES=10 (set in ")
    assert f"'{json_file}' has 3 categories ['two', 'five', 'nine']" in error
