"""tools/train_net.py end to end on a tiny digits set: train, evaluate, resume, 2 CPU processes."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import GeneralizedRCNNWithTTA, build_model
from detectron2.structures import Boxes, BoxMode, Instances

from resnext_det import add_resnext_config
from resnext_det.checkpoint import read_weights
from resnext_det.data import DigitsSpec, build_digits_dataset, register_digits
from resnext_det.engine import Trainer
from resnext_det.utils.testing import max_rel_error
from tests.helpers import (assert_same_detections, captured, detectron2_detections, load_tool,
                           pycocotools_stats, register_coco_file, weight_changes)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")
TINY = [
    "MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 16, "MODEL.FPN.OUT_CHANNELS", 16,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1,
    "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 0,
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 64, "DATALOADER.NUM_WORKERS", 0,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,  # an untrained model still outputs boxes
]


def _train(datasets_root, output_dir, *extra, num_gpus=1, late=(), rc=0):
    """tools/train_net.py on the tiny set: `extra` (flags, overrides) before TINY, `late`
    (overrides of TINY's) after; it must end with exit status `rc`."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root))
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", CONFIG,
           "--num-gpus", str(num_gpus), *map(str, extra), *map(str, TINY), *map(str, late),
           "OUTPUT_DIR", str(output_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == rc, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _metrics(output_dir):
    return json.loads((output_dir / "inference/digits_val/coco_metrics.json").read_text())


def _written_results(output_dir):
    """The COCO results a run wrote for digits_val."""
    return json.loads((output_dir / "inference/digits_val/coco_instances_results.json")
                      .read_text())


def _detectron2_results(datasets_root, run_dir, folder, checkpoint="model_final.pth"):
    """The COCO results of run_dir's `checkpoint` on digits_val by detectron2 alone, from
    the run's config.yaml (tests.helpers.detectron2_detections)."""
    digits = datasets_root / "digits"
    results = detectron2_detections(run_dir / "config.yaml", run_dir / checkpoint,
                                    digits / "annotations/instances_val.json",
                                    digits / "images/val", folder)
    assert len({r["image_id"] for r in results}) == 4  # boxes on every val image (threshold 0)
    return results


def test_train_evaluate_then_resume(datasets_root, tmp_path):
    out = tmp_path / "run"
    _train(datasets_root, out, "SOLVER.MAX_ITER", 4)
    assert (out / "model_final.pth").is_file() and (out / "model_0000001.pth").is_file()
    metrics = _metrics(out)
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-0", "AP-9"}
    assert math.isfinite(metrics["bbox"]["AP"])  # 4 iterations learn nothing: scored, not judged

    before = (out / "metrics.json").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in before if "total_loss" in line] == [3]
    # killed after the checkpoint of iteration 1, while writing a record
    for name in ("model_0000003.pth", "model_final.pth"):
        (out / name).unlink()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    with open(out / "metrics.json", "a") as f:
        f.write('{"data_time": 0.1, "iter')
    log = _train(datasets_root, out, "--resume", "SOLVER.MAX_ITER", 6)
    assert "Starting training from iteration 2" in log
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    # the killed run's records after its checkpoint are gone; the resumed run's follow
    assert [r["iteration"] for r in records if "total_loss" in r] == [5]
    assert [r["iteration"] for r in records if "bbox/AP" in r] == [6]  # detectron2: after 5

    evaluated = _train(datasets_root, tmp_path / "eval", "--eval-only",
                       "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert "copypaste: AP,AP50" in evaluated
    # the resumed run's final evaluation and the --eval-only of its model_final.pth: what
    # detectron2's own inference of model_final.pth detects, and pycocotools scores
    expected = _detectron2_results(datasets_root, out, tmp_path / "detectron2")
    scored = pycocotools_stats(datasets_root / "digits/annotations/instances_val.json", expected)
    for folder in (out, tmp_path / "eval"):
        assert_same_detections(_written_results(folder), expected)
        assert {k: _metrics(folder)["bbox"][k] for k in scored} == pytest.approx(
            scored, abs=1e-3, nan_ok=True)


def test_resume_with_another_lr_or_batch_is_an_error(datasets_root, tmp_path):
    """torch's Optimizer.load_state_dict puts back the checkpoint's weight decay, detectron2's
    LRScheduler hook its base lr: a run resumed with another SOLVER.BASE_LR trained on at the
    old one, and with another IMS_PER_BATCH from another place in the data. A bias weight
    decay of its own regroups the parameters: torch's load stopped on a bare ValueError."""
    out = tmp_path / "run"
    _train(datasets_root, out, "SOLVER.MAX_ITER", 2)
    saved = read_weights(out / "model_final.pth").obj
    trainer = saved["trainer"]  # what detectron2 and torch restore
    trained = {"BASE_LR": max(trainer["hooks"]["LRScheduler"]["base_lrs"]),
               "WEIGHT_DECAY": trainer["_trainer"]["optimizer"]["param_groups"][0]["weight_decay"]}
    cfg_file = yaml.safe_load((out / "config.yaml").read_text())
    assert trained == {k: cfg_file["SOLVER"][k] for k in trained}
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root))
    trained.update({k: cfg_file["SOLVER"][k] for k in ("IMS_PER_BATCH", "WEIGHT_DECAY_BIAS")})
    for key, value in (("BASE_LR", trained["BASE_LR"] / 10), ("WEIGHT_DECAY", 0.0),
                       ("IMS_PER_BATCH", 1), ("WEIGHT_DECAY_BIAS", 0.0)):
        cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--config-file", CONFIG,
               "--resume", *map(str, TINY), "SOLVER.MAX_ITER", "4", f"SOLVER.{key}", str(value),
               "OUTPUT_DIR", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert (f"error: SOLVER.{key}={value!r} is not valid: expected {trained[key]!r}, the "
                f"value {out / 'model_final.pth'} was trained with") in proc.stderr, \
            proc.stderr[-3000:]
    assert read_weights(out / "model_final.pth").obj["iteration"] == 1  # nothing trained


def _ap50_by_pycocotools(datasets_root, output_dir):
    """AP50 of a run's written detections on digits_val, scored by pycocotools here."""
    results = (output_dir / "inference/digits_val/coco_instances_results.json").read_text()
    gt = datasets_root / "digits/annotations/instances_val.json"
    return pycocotools_stats(gt, json.loads(results))["AP50"]


def test_a_detector_learns_the_images_it_trains_on(datasets_root, tmp_path):
    """The other training tests score a few iterations (finite AP, AP = pycocotools'): a broken
    label mapping, box target or learning rate passes them. Here 200 iterations on the 4
    digits_val images themselves must lift AP50 (pycocotools on the written detections) far
    above the untrained start's, the same SEED run for 1 iteration at LR 1e-12, and halve
    the loss."""
    same = ("DATASETS.TRAIN", "('digits_val',)", "SEED", 1, "SOLVER.CHECKPOINT_PERIOD", 1000)
    _train(datasets_root, tmp_path / "start", late=(*same, "SOLVER.MAX_ITER", 1,
                                                    "SOLVER.BASE_LR", 1e-12))
    _train(datasets_root, tmp_path / "trained", late=(*same, "SOLVER.MAX_ITER", 200,
                                                      "SOLVER.WARMUP_ITERS", 10))
    start, trained = (_ap50_by_pycocotools(datasets_root, tmp_path / run)
                      for run in ("start", "trained"))
    assert trained > start + 25, (start, trained)
    losses = [json.loads(line)["total_loss"]
              for line in (tmp_path / "trained/metrics.json").read_text().splitlines()
              if "total_loss" in line]
    assert losses[-1] < losses[0] / 2, losses


def test_a_fine_tuning_from_another_runs_model_final_is_a_fresh_start(datasets_root, tmp_path):
    """MODEL.WEIGHTS a model_final file of another folder (another training's model_final.pth,
    pretrain_cls.py's model_final.pkl) was taken for a finished run that --resume extends:
    its "final evaluation" was redone before the first iteration."""
    _train(datasets_root, tmp_path / "first", "SOLVER.MAX_ITER", 2)
    log = _train(datasets_root, tmp_path / "tuned", "SOLVER.MAX_ITER", 2, "MODEL.WEIGHTS",
                 tmp_path / "first/model_final.pth")
    assert "Starting training from iteration 0" in log and "holds no evaluation" not in log
    records = [json.loads(line) for line in (tmp_path / "tuned/metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "bbox/AP" in r] == [2]  # the final one only


def test_an_evaluation_into_a_trainings_folder_keeps_the_trainings_results(datasets_root,
                                                                           tmp_path):
    """--eval-only of an earlier checkpoint into the training's folder (detectron2's usual
    command) replaced the training's final evaluation files in inference/: they are kept,
    whole, in inference.before-<time>."""
    out = tmp_path / "run"
    _train(datasets_root, out, "SOLVER.MAX_ITER", 4)
    training = {p.relative_to(out / "inference"): p.read_bytes()
                for p in (out / "inference").rglob("*") if p.is_file()}
    assert Path("digits_val/coco_metrics.json") in training
    log = _train(datasets_root, out, "--eval-only", "MODEL.WEIGHTS", out / "model_0000001.pth")
    # detectron2 logged "Full config saved to OUTPUT_DIR/config.yaml": where it is instead
    assert f"The evaluation's config is {out / 'inference/config.yaml'}" in log
    [kept] = out.glob("inference.before-*")
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == training
    assert (out / "inference/digits_val/coco_metrics.json").is_file()
    assert "model_0000001.pth" in (out / "inference/config.yaml").read_text()
    # a refused evaluation (weights of another class count) moved this one aside too, and
    # left an inference/ of its config.yaml only: now both stay as they were
    evaluation = {p: p.read_bytes() for p in (out / "inference").rglob("*") if p.is_file()}
    log = _train(datasets_root, out, "--eval-only", "MODEL.WEIGHTS", out / "model_0000001.pth",
                 "MODEL.ROI_HEADS.NUM_CLASSES", 3, rc=2)
    assert "the earlier one is back in" in log
    assert {p: p.read_bytes() for p in (out / "inference").rglob("*") if p.is_file()} == evaluation
    assert list(out.glob("inference.before-*")) == [kept]


def _by_image(results):
    """COCO json results per image id, as (category, x, y, w, h, score) rows, sorted."""
    rows = {}
    for r in results:
        rows.setdefault(r["image_id"], []).append([r["category_id"], *r["bbox"], r["score"]])
    return {i: np.array(sorted(v)) for i, v in rows.items()}


def test_test_time_augmentation_is_detectron2s(datasets_root, tmp_path):
    """TEST.AUG.ENABLED: detectron2's tools/train_net.py evaluates with its
    GeneralizedRCNNWithTTA after the training and after an --eval-only's plain evaluation;
    ours ignored the key, and reported plain AP. The written TTA detections equal those of
    detectron2's own TTA model (detectron2's build_model, loaded by its
    DetectionCheckpointer) over the same test images, scored by its COCOEvaluator."""
    out = tmp_path / "run"
    aug = ["TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", "(48,80)",
           "MODEL.RESNEXT.FAST_INFERENCE", '""']  # the model as trained: exact equality
    _train(datasets_root, out, "SOLVER.MAX_ITER", 2, *aug)
    last = json.loads((out / "metrics.json").read_text().splitlines()[-1])
    ours = json.loads((out / "inference/digits_val_TTA/coco_instances_results.json").read_text())
    register_digits(datasets_root / "digits")
    cfg = get_cfg()
    add_resnext_config(cfg)
    cfg.merge_from_file(str(out / "config.yaml"))
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(out / "model_final.pth"))
    evaluator = COCOEvaluator("digits_val", output_dir=str(tmp_path / "detectron2"))
    theirs_ap = inference_on_dataset(GeneralizedRCNNWithTTA(cfg, model),
                                     build_detection_test_loader(cfg, "digits_val"), evaluator)
    theirs = json.loads((tmp_path / "detectron2/coco_instances_results.json").read_text())
    got, expected = _by_image(ours), _by_image(theirs)
    assert len(theirs) > 20 and got.keys() == expected.keys()
    for image_id, rows in expected.items():
        assert got[image_id].shape == rows.shape and np.allclose(got[image_id], rows, atol=1e-4)
    assert last["bbox_TTA/AP"] == pytest.approx(theirs_ap["bbox"]["AP"], abs=1e-3)
    (out / "inference/digits_val_TTA/coco_instances_results.json").unlink()
    # TEST.EXPECTED_RESULTS (detectron2's verify_results) was not checked by --eval-only
    ap = round(theirs_ap["bbox"]["AP"], 3)
    evaluate = ["--eval-only", "MODEL.WEIGHTS", out / "model_final.pth", *aug]
    log = _train(datasets_root, out, *evaluate, "TEST.EXPECTED_RESULTS",
                 f"[['bbox_TTA', 'AP', {ap}, 0.01]]")
    assert "Evaluating with test-time augmentation (TEST.AUG)" in log
    assert "Results verification passed" in log
    evaluated = out / "inference/digits_val_TTA/coco_instances_results.json"
    assert _by_image(json.loads(evaluated.read_text())).keys() == expected.keys()
    log = _train(datasets_root, out, *evaluate, "TEST.EXPECTED_RESULTS",
                 f"[['bbox_TTA', 'AP', {ap + 50}, 1.0]]", rc=1)
    assert "Result verification failed" in log


def test_two_cpu_processes(datasets_root, tmp_path):
    out = tmp_path / "ddp"
    log = _train(datasets_root, out, "SOLVER.MAX_ITER", 2, "MODEL.BACKBONE.FREEZE_AT", 1,
                 num_gpus=2)
    assert log.count("MODEL.BACKBONE.FREEZE_AT=1 with no weights to load") == 1  # rank 0
    assert (out / "log.txt").is_file() and (out / "log.txt.rank1").is_file()
    assert "Starting training from iteration 0" in (out / "log.txt.rank1").read_text()
    assert log.count("COCO metrics written to") == 1  # rank 0 only
    assert (out / "model_final.pth").is_file()
    assert math.isfinite(_metrics(out)["bbox"]["AP"])
    # The demo's NORM "BN" keeps running statistics per process, and a checkpoint holds rank
    # 0's: the final evaluation (each process scores half the images) must be model_final's,
    # as detectron2's own inference computes it (rank 1 scored its images with its own
    # statistics).
    assert_same_detections(_written_results(out),
                            _detectron2_results(datasets_root, out, tmp_path / "detectron2"))


# What makes two processes of 1 image train as one process of 2 does: nothing drawn at random
# per process (each draws from SEED + rank), and every image weighing the same in its
# process's loss means. Fixed-size 64 px images, no flip (the demo's), and:
AS_ONE_PROCESS = [
    "MODEL.RESNETS.NORM", "naiveSyncBN",  # the demo's "BN" normalizes each process's image alone
    # more than the 1023 anchors of a 64 px image (3 per place of P2-P6): subsample_labels
    # takes every labelled one, its randperm picks nothing; the loss is divided by
    # 4096 x images, the same sum either way
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 4096,
    # 32 proposals per image (NMS leaves more) and its 1 box, all taken by the ROI heads:
    # 33 per image, so each process's mean over its regions is the mean over all
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512,
    "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 1]


def _detectron2_training(run_dir, json_file, image_root, output_dir):
    """detectron2's own DefaultTrainer, in this process (one process), on the config a run
    wrote, over the training json registered here by register_coco_instances: its
    build_model, train loader, optimizer, schedule, SimpleTrainer and DetectionCheckpointer,
    none of resnext_det's engine (its Trainer, FAST_TRAINING, ROI_ALIGN, data checks).
    seed_all_rng(SEED) as detectron2's default_setup does for rank 0."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer
    from detectron2.utils.env import seed_all_rng

    from resnext_det import add_resnext_config

    name = "detectron2_oracle_train"
    register_coco_file(name, json_file, image_root)
    cfg = add_resnext_config(get_cfg())
    cfg.merge_from_file(str(run_dir / "config.yaml"))
    cfg.merge_from_list(["DATASETS.TRAIN", (name,), "DATASETS.TEST", (),  # no evaluation
                         "OUTPUT_DIR", str(output_dir)])
    seed_all_rng(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()


def test_two_cpu_processes_train_as_one(tmp_path):
    """DDP averages the two processes' gradients and naiveSyncBN their statistics: on the
    same images (detectron2's TrainingSampler gives rank r the places r, r + 2, ... of one
    seeded stream), the weights after 4 steps are one process's to float rounding. The one
    process: detectron2's own DefaultTrainer on the run's config."""
    root = tmp_path / "datasets"
    build_digits_dataset(root / "digits", DigitsSpec(num_train=12, num_val=4, image_size=64,
                                                     digit_sizes=(12, 24), max_digits=1), 0)
    train = json.loads((root / "digits/annotations/instances_train.json").read_text())
    assert sorted(a["image_id"] for a in train["annotations"]) == sorted(
        i["id"] for i in train["images"])  # one digit per image
    _train(root, tmp_path / "two", num_gpus=2, late=AS_ONE_PROCESS)
    _detectron2_training(tmp_path / "two", root / "digits/annotations/instances_train.json",
                         root / "digits/images/train", tmp_path / "one")
    weights = {name: read_weights(tmp_path / name / "model_final.pth").obj["model"]
               for name in ("one", "two")}
    start = read_weights(tmp_path / "one/model_0000000.pth").obj["model"]  # after one step
    expected = weight_changes(weights["one"], start)
    # the check means something: 3 steps moved the weights far past float32's rounding
    assert expected["parameters"].abs().max() > 1e-3 * max(v.abs().max() for v in start.values())
    assert max_rel_error(weight_changes(weights["two"], start), expected) < 1e-4  # measured: 3e-7


class GroundTruthDetector(torch.nn.Module):
    """A perfect detector: each image's ground-truth boxes (score 1), in the original
    image's coordinates, as detectron2's models return detections."""

    def __init__(self, dataset_name):
        super().__init__()
        self.truth = {r["image_id"]: r["annotations"] for r in DatasetCatalog.get(dataset_name)}

    def forward(self, batched_inputs):
        outputs = []
        for record in batched_inputs:
            anns = self.truth[record["image_id"]]
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
            outputs.append({"instances": Instances(
                (record["height"], record["width"]),
                pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                scores=torch.ones(len(anns)),
                pred_classes=torch.tensor([a["category_id"] for a in anns], dtype=torch.int64))})
        return outputs


class _NoLoading:
    """A checkpointer that loads nothing: the ground-truth detector has no weights (so none
    are missing, and no class names are stored)."""
    loaded_file = last_classes = last_input = None

    def __init__(self, *args, **kwargs):
        pass

    def check_loaded_whole(self, fix):
        pass

    def has_checkpoint(self):
        return False

    def resume_or_load(self, path, *, resume=True):
        return {}


def _ground_truth_model(monkeypatch, folder, detector=None):
    """Trainer builds a ground-truth detector and loads nothing into it; returns the
    MODEL.WEIGHTS to give (a file must be named: --eval-only needs weights)."""
    detector = detector or GroundTruthDetector
    monkeypatch.setattr(Trainer, "build_model", classmethod(
        lambda cls, cfg: detector(cfg.DATASETS.TEST[0])))
    monkeypatch.setattr(Trainer, "build_checkpointer", classmethod(_NoLoading))
    (folder / "no_weights.pth").write_bytes(b"")
    return str(folder / "no_weights.pth")


def test_eval_only_scores_a_perfect_detector_100(datasets_root, tmp_path, monkeypatch):
    """tools/train_net.py --eval-only (data loader, FAST_INFERENCE copy, evaluator, class
    ids, box modes, coco_metrics.json) on a model that returns the ground truth: AP 100."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    register_digits(datasets_root / "digits")
    weights = _ground_truth_model(monkeypatch, tmp_path)
    load_tool("train_net").run(["--config-file", CONFIG, "--eval-only", "MODEL.WEIGHTS", weights,
                                *map(str, TINY), "OUTPUT_DIR", str(tmp_path)])
    bbox = _metrics(tmp_path)["bbox"]
    present = {k: v for k, v in bbox.items() if not math.isnan(v)}  # classes in the 4 images
    assert {"AP", "AP50", "AP75"} <= set(present) and len(present) > 6
    assert all(v == pytest.approx(100) for v in present.values()), bbox


def test_evaluation_batches_follow_test_ims_per_batch(datasets_root, tmp_path, monkeypatch):
    """TEST.IMS_PER_BATCH images reach the model per evaluation batch (4 val images, 3 per
    batch: 3 then 1), and the perfect detector still scores AP 100."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    register_digits(datasets_root / "digits")
    seen = []

    class Recording(GroundTruthDetector):
        def forward(self, batched_inputs):
            seen.append(len(batched_inputs))
            return super().forward(batched_inputs)

    weights = _ground_truth_model(monkeypatch, tmp_path, Recording)
    load_tool("train_net").run(["--config-file", CONFIG, "--eval-only", "MODEL.WEIGHTS", weights,
                                *map(str, TINY), "TEST.IMS_PER_BATCH", "3",
                                "OUTPUT_DIR", str(tmp_path)])
    assert seen == [3, 1]
    assert _metrics(tmp_path)["bbox"]["AP"] == pytest.approx(100)


def _user_error(capsys, argv):
    """tools/train_net.py on bad input: exit status 2 and one `error:` line; that line."""
    with pytest.raises(SystemExit) as exit_:
        load_tool("train_net").run(argv)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in errors[0]
    return errors[0]


def test_unregistered_dataset_is_a_clear_error(tmp_path, capsys):
    error = _user_error(capsys, ["--config-file", CONFIG, "DATASETS.TRAIN", "('no_such_set',)",
                                 "OUTPUT_DIR", str(tmp_path)])
    assert re.search(r"DATASETS.TRAIN='no_such_set' .*registered", error)


def test_missing_weights_file_is_a_clear_error(datasets_root, tmp_path, capsys):
    register_digits(datasets_root / "digits")
    error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", "MODEL.WEIGHTS",
                                 "missing/x.pth", "OUTPUT_DIR", str(tmp_path), *map(str, TINY)])
    assert re.search(r"MODEL.WEIGHTS='missing/x.pth' .*existing", error)


def test_eval_only_without_weights_is_a_clear_error(datasets_root, tmp_path, capsys):
    """detectron2 evaluated the random initialization (an INFO line said "from scratch")."""
    register_digits(datasets_root / "digits")
    for resume in ([], ["--resume"]):  # --resume on a folder without checkpoints alike
        error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", *resume,
                                     "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path / "empty"),
                                     *map(str, TINY)])
        assert re.search(r"MODEL.WEIGHTS='' .*a checkpoint to evaluate", error)
    assert not list((tmp_path / "empty").glob("inference/*/coco_metrics.json"))


def test_missing_coco_file_names_the_file(tmp_path, capsys):
    error = _user_error(capsys, ["--config-file", str(ROOT / "configs/faster_rcnn_X50_32x4d.yaml"),
                                 "--eval-only", "OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", ""])
    assert re.search(r"coco_2014_minival.*instances_minival2014.json.*DETECTRON2_DATASETS", error)


def test_a_bad_resnext_key_stops_the_run_before_training(datasets_root, tmp_path, capsys):
    """FAST_INFERENCE is used only at the first evaluation: it is checked at start."""
    error = _user_error(capsys, ["--config-file", CONFIG, "MODEL.RESNEXT.FAST_INFERENCE", "bogus",
                                 "OUTPUT_DIR", str(tmp_path / "run"), *map(str, TINY)])
    assert error.startswith("error: MODEL.RESNEXT.FAST_INFERENCE='bogus' is not valid")
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_a_bad_evaluation_batch_size_is_a_clear_error(datasets_root, tmp_path, capsys):
    error = _user_error(capsys, ["--config-file", CONFIG, "TEST.IMS_PER_BATCH", "0",
                                 "OUTPUT_DIR", str(tmp_path / "run"), *map(str, TINY)])
    assert error.startswith("error: TEST.IMS_PER_BATCH=0 is not valid: expected a whole number")


def test_output_dir_that_is_a_file(datasets_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    error = _user_error(capsys, ["--config-file", CONFIG, "OUTPUT_DIR", str(tmp_path / "taken"),
                                 *map(str, TINY)])
    assert "OUTPUT_DIR=" in error and "expected a folder" in error
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.parametrize("freeze_at, weights, frozen", [
    (2, "", "the stem and res2 would stay"), (4, "", "the stem and res2..res4 would stay"),
    (1, "", "the stem would stay"), (0, "", None), (2, "x.pth", None)])
def test_frozen_stages_without_weights_are_warned(caplog, freeze_at, weights, frozen):
    from resnext_det.engine.checks import warn_frozen_from_scratch

    with caplog.at_level("WARNING"):
        warn_frozen_from_scratch(weights, freeze_at)
    if frozen is None:
        assert not caplog.records
    else:
        assert f"MODEL.BACKBONE.FREEZE_AT={freeze_at} with no weights to load: {frozen}" in caplog.text
        assert "Set MODEL.BACKBONE.FREEZE_AT 0 to train from scratch" in caplog.text


def test_frozen_stages_of_a_python_config_are_warned_in_its_syntax(caplog):
    """The lazy path's warning named its key but asked for "freeze_at 0", the YAML form."""
    from resnext_det.engine.checks import warn_frozen_from_scratch

    key = "model.backbone.bottom_up.freeze_at"
    with caplog.at_level("WARNING"):
        warn_frozen_from_scratch("", 2, key)
    assert f"Set {key}=0 to train from scratch" in caplog.text


def test_a_new_training_never_overwrites_an_earlier_runs_checkpoints(datasets_root, tmp_path,
                                                                     capsys):
    """detectron2 trains over them (and appends to the same metrics.json): an error naming
    the files and --resume; nothing in the folder changes (config.yaml was replaced by the
    refused run's). Evaluation may use the folder."""
    register_digits(datasets_root / "digits")
    out = tmp_path / "run"
    out.mkdir()
    for name, data in (("model_final.pth", b"the earlier run's model"),
                       ("metrics.json", b'{"iteration": 9}\n'),
                       ("config.yaml", b"# the earlier run's config\n")):
        (out / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    error = _user_error(capsys, ["--config-file", CONFIG, *map(str, TINY), "SOLVER.MAX_ITER", "2",
                                 "OUTPUT_DIR", str(out)])
    assert re.search(r"OUTPUT_DIR='.*run' is not valid: expected a folder without an earlier "
                     r"run's checkpoints, .*model_final.pth.*Pass --resume", error)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before


def test_resume_past_the_end_is_an_error_that_keeps_the_run(datasets_root, tmp_path, capsys):
    """--resume with SOLVER.MAX_ITER below the checkpoint's: detectron2 trained nothing,
    exited 0, and replaced the finished run's final evaluation record. Now an error naming
    the key and the checkpoint; the folder as it was."""
    out = tmp_path / "run"
    _train(datasets_root, out, "SOLVER.MAX_ITER", 4)
    before = {p.name: p.read_bytes() for p in out.iterdir()
              if p.is_file() and p.name not in (".lock", "log.txt")}  # the log grows
    register_digits(datasets_root / "digits")
    error = _user_error(capsys, ["--config-file", CONFIG, "--resume", *map(str, TINY),
                                 "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)])
    assert re.search(r"SOLVER.MAX_ITER=2 is not valid: expected an end at or after iteration 4, "
                     r"where .*model_final.pth resumes \(this one ends at iteration 2\)", error)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name in before}
    assert after == before


def _evaluations(output_dir):
    """[(iteration, {AP, AP50, ...}), ...] of the evaluation records in metrics.json, in
    their order (a second record of one iteration shows)."""
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    return [(r["iteration"], {k[5:]: v for k, v in r.items() if k.startswith("bbox/")})
            for r in records if "bbox/AP" in r]


def _resume_recording_evaluations(monkeypatch, datasets_root, output_dir, max_iter, late=()):
    """_train's --resume run in this process, and the COCO results each of its evaluations
    wrote, in their order (each evaluation replaces the file of the one before): the file
    read as detectron2's inference_on_dataset, which DefaultTrainer.test calls, returns."""
    import detectron2.engine.defaults as defaults

    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    register_digits(datasets_root / "digits")
    written, inference = [], defaults.inference_on_dataset

    def recording(*args, **kwargs):
        metrics = inference(*args, **kwargs)
        written.append(_written_results(output_dir))
        return metrics

    monkeypatch.setattr(defaults, "inference_on_dataset", recording)
    load_tool("train_net").run(["--config-file", CONFIG, "--resume", "SOLVER.MAX_ITER",
                                str(max_iter), *map(str, TINY), *map(str, late),
                                "OUTPUT_DIR", str(output_dir)])
    return written


def _assert_scored_as(metrics, expected, datasets_root):
    """An evaluation's {AP, AP50, ...}: pycocotools' on the detections `expected`."""
    scored = pycocotools_stats(datasets_root / "digits/annotations/instances_val.json", expected)
    assert {k: metrics[k] for k in scored} == pytest.approx(scored, abs=1e-3, nan_ok=True)


def test_resume_extending_a_finished_run_keeps_its_final_evaluation(datasets_root, tmp_path,
                                                                    monkeypatch):
    """A finished run's final evaluation is recorded at iteration MAX_ITER, where --resume
    with a larger MAX_ITER starts: it was cut with the records after the checkpoint. The
    record kept is the finished run's, of what detectron2 detects with its model_final.pth;
    the resumed run evaluates once, at its own end, its own model_final.pth."""
    out = tmp_path / "run"
    _train(datasets_root, out, "SOLVER.MAX_ITER", 4)
    final = _evaluations(out)
    assert [iteration for iteration, _ in final] == [4]
    at_4 = _detectron2_results(datasets_root, out, tmp_path / "detectron2_4")
    assert_same_detections(_written_results(out), at_4)
    _assert_scored_as(final[0][1], at_4, datasets_root)
    written = _resume_recording_evaluations(monkeypatch, datasets_root, out, 6)
    evaluations = _evaluations(out)
    assert [iteration for iteration, _ in evaluations] == [4, 6]
    assert evaluations[0] == final[0]
    at_6 = _detectron2_results(datasets_root, out, tmp_path / "detectron2_6")
    assert len(written) == 1  # not iteration 4 again
    assert_same_detections(written[0], at_6)
    _assert_scored_as(evaluations[1][1], at_6, datasets_root)


def test_resume_extending_a_run_killed_in_its_final_evaluation_runs_it(datasets_root,
                                                                        tmp_path, monkeypatch):
    """model_final.pth written, then killed during the final evaluation: --resume with a
    larger MAX_ITER went on, and the run's evaluation at its first end was never recorded.
    Now it is evaluated first: what detectron2 detects with that model_final.pth."""
    out = tmp_path / "run"
    _train(datasets_root, out, "SOLVER.MAX_ITER", 4)
    lines = (out / "metrics.json").read_text().splitlines(keepends=True)
    (out / "metrics.json").write_text("".join(x for x in lines if "bbox/AP" not in x))
    at_4 = _detectron2_results(datasets_root, out, tmp_path / "detectron2_4")  # resumed from
    written = _resume_recording_evaluations(monkeypatch, datasets_root, out, 6)
    assert "holds no evaluation of iteration 4, where this run resumes" in (
        out / "log.txt").read_text()
    evaluations = _evaluations(out)
    assert [iteration for iteration, _ in evaluations] == [4, 6] and len(written) == 2
    at_6 = _detectron2_results(datasets_root, out, tmp_path / "detectron2_6")
    for (_, metrics), got, expected in zip(evaluations, written, (at_4, at_6)):
        assert_same_detections(got, expected)
        _assert_scored_as(metrics, expected, datasets_root)


def test_resume_redoes_the_evaluation_a_kill_cut_short(datasets_root, tmp_path, monkeypatch):
    """Killed during the evaluation after the checkpoint of iteration 1 (TEST.EVAL_PERIOD 2):
    --resume goes on from that checkpoint, and that evaluation was never recorded. Now it is
    evaluated first: what detectron2 detects with model_0000001.pth."""
    out, every_2 = tmp_path / "run", ("TEST.EVAL_PERIOD", 2)
    _train(datasets_root, out, "SOLVER.MAX_ITER", 4, late=every_2)
    uninterrupted = _evaluations(out)
    # detectron2: after iteration 1 (the 2nd), the end
    assert [iteration for iteration, _ in uninterrupted] == [1, 4]
    for name in ("model_0000003.pth", "model_final.pth"):
        (out / name).unlink()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    (out / "metrics.json").write_text("")  # the first record is written after iteration 3
    written = _resume_recording_evaluations(monkeypatch, datasets_root, out, 4, late=every_2)
    assert "holds no evaluation of iteration 1, where this run resumes" in (
        out / "log.txt").read_text()
    evaluations = _evaluations(out)
    assert [iteration for iteration, _ in evaluations] == [1, 4] and len(written) == 2
    expected = [_detectron2_results(datasets_root, out, tmp_path / name, name)
                for name in ("model_0000001.pth", "model_final.pth")]
    for (_, metrics), got, truth in zip(evaluations, written, expected):
        assert_same_detections(got, truth)
        _assert_scored_as(metrics, truth, datasets_root)


def test_test_images_are_checked_before_training(datasets_root, tmp_path, capsys, monkeypatch):
    """A missing DATASETS.TEST image stopped the first evaluation, after the training, with a
    bare FileNotFoundError; a truncated one with an OSError. Now: missing, before the first
    iteration; undecodable, an error naming it."""
    import shutil

    root = tmp_path / "datasets"
    shutil.copytree(datasets_root / "digits", root / "digits")
    register_digits(root / "digits")
    val = sorted((root / "digits/images/val").iterdir())
    val[0].unlink()
    try:
        error = _user_error(capsys, ["--config-file", CONFIG, *map(str, TINY), "SOLVER.MAX_ITER",
                                     "2", "OUTPUT_DIR", str(tmp_path / "run")])
        assert re.search(r"1 of 4 images of DATASETS.TEST 'digits_val' do not exist: "
                         rf"'.*{val[0].name}'", error), error
        assert not (tmp_path / "run" / "model_final.pth").exists()
        from tests.engine.test_lazy import DIGITS, TINY_DATA, TINY_MODEL
        error = _user_error(capsys, ["--config-file", DIGITS, "--eval-only", *TINY_MODEL,
                                     *TINY_DATA, f"train.init_checkpoint={tmp_path / 'x.pth'}",
                                     f"train.output_dir={tmp_path / 'lazy'}"])
        assert "1 of 4 images of dataloader.test.dataset.names 'digits_val' do not" in error
        shutil.copy(val[1], val[0])
        val[1].write_bytes(val[1].read_bytes()[:200])  # truncated
        weights = _ground_truth_model(monkeypatch, tmp_path)
        error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", *map(str, TINY),
                                     "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "e")])
    finally:
        register_digits(datasets_root / "digits")  # the other tests' set again
    assert f"Evaluation image '{val[1]}' cannot be read" in error, error


def test_weights_url_without_network_is_a_clear_error(datasets_root, tmp_path, capsys):
    """detectron2's configs name detectron2:// and https:// weights; with no network the
    download was a urllib traceback. (Port 9 on this machine refuses at once.)"""
    register_digits(datasets_root / "digits")
    url = "https://127.0.0.1:9/ImageNetPretrained/X-50.pkl"
    error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", *map(str, TINY),
                                 "MODEL.WEIGHTS", url, "OUTPUT_DIR", str(tmp_path)])
    assert error.startswith(f"error: {url}: could not be downloaded (URLError: ")
    assert "set MODEL.WEIGHTS to the local file" in error
    error = _user_error(capsys, ["--config-file", CONFIG, "--eval-only", *map(str, TINY),
                                 "MODEL.WEIGHTS", url, "MODEL.RESNEXT.CONFIG_FROM_WEIGHTS", "True",
                                 "OUTPUT_DIR", str(tmp_path)])
    assert error.startswith(f"error: {url}: could not be downloaded (URLError: ")


def test_resume_without_a_checkpoint_warns(datasets_root, tmp_path):
    """--resume into a folder with no checkpoint (a mistyped OUTPUT_DIR) trains anew; it
    was an INFO line of detectron2's among hundreds."""
    from tests.helpers import captured

    register_digits(datasets_root / "digits")
    with captured("resnext_det") as records:
        load_tool("train_net").run(["--config-file", CONFIG, "--resume", *map(str, TINY),
                                    "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "typo")])
    assert any(f"--resume: '{tmp_path / 'typo'}' holds no checkpoint to resume from; a new "
               "training starts from scratch" in r for r in records), records
    assert (tmp_path / "typo" / "model_final.pth").is_file()


def test_pictures_deeper_than_8_bits_are_named_not_trained_white(datasets_root, tmp_path,
                                                                 capsys):
    """detectron2's reader clips a 16-bit picture's values to 255: the model trained on
    white pictures, silently. (tools/predict.py reads such files by their top 8 bits.)"""
    import shutil

    import numpy as np
    from PIL import Image

    root = tmp_path / "datasets"
    shutil.copytree(datasets_root / "digits", root / "digits")
    register_digits(root / "digits")
    for path in (root / "digits/images/train").iterdir():  # PNG content; PIL reads by content
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257
        Image.fromarray(pixels).save(path, format="PNG")
    try:
        error = _user_error(capsys, ["--config-file", CONFIG, *map(str, TINY), "SOLVER.MAX_ITER",
                                     "1", "OUTPUT_DIR", str(tmp_path / "run")])
    finally:
        register_digits(datasets_root / "digits")
    assert re.search(r"Training image '.*' is a picture of more than 8 bits \(PIL mode "
                     r"'I;16'\)", error), error


def test_a_training_that_diverges_is_one_error_line(datasets_root, tmp_path, capsys):
    """detectron2's FloatingPointError (an infinite loss, or Inf/NaN boxes) was a traceback;
    then one error line, after the traceback detectron2's training loop logged of it."""
    register_digits(datasets_root / "digits")
    with captured("detectron2.engine.train_loop", tracebacks=True) as logged:
        error = _user_error(capsys, ["--config-file", CONFIG, *map(str, TINY), "SOLVER.BASE_LR",
                                     "1e30", "SOLVER.MAX_ITER", "5", "OUTPUT_DIR", str(tmp_path)])
    assert error.startswith("error: the training diverged (")  # Inf or NaN, as detectron2 found
    assert "Lower SOLVER.BASE_LR" in error
    assert any("FloatingPointError" in message for message in logged)
    assert not any("Traceback" in message for message in logged)


@pytest.mark.parametrize("eval_only", [False, True])
def test_a_run_folder_as_weights_names_the_files_it_holds(datasets_root, tmp_path, capsys,
                                                          eval_only):
    """MODEL.WEIGHTS set to a run's OUTPUT_DIR, not its model_final.pth: the error said
    "expected an existing file" (it exists) and, for a training, to download the weights."""
    register_digits(datasets_root / "digits")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model_0000001.pth", "model_final.pth", "metrics.json"):
        (run / name).write_bytes(b"")
    error = _user_error(capsys, ["--config-file", CONFIG, *(["--eval-only"] * eval_only),
                                 *map(str, TINY), "MODEL.WEIGHTS", str(run),
                                 "OUTPUT_DIR", str(tmp_path / "out")])
    assert f"MODEL.WEIGHTS='{run}' is not valid: expected a weights file, not a folder" in error
    assert "(it holds model_final.pth, model_0000001.pth)" in error
