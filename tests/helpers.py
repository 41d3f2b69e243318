"""Shared test helpers: detectron2 configs with resnext_det's keys, the tools as modules,
pycocotools' COCOeval as the independent scorer of written detections, and detectron2's own
inference as the independent source of a checkpoint's detections.

Random norm statistics and relative errors: resnext_det.utils.testing (benchmarks/ uses
them too)."""
import contextlib
import copy
import importlib.util
import io
import json
import logging
import math
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import resnext_det


def make_cfg(*overrides, backbone="build_resnext_backbone"):
    """A detectron2 config on the CPU with MODEL.RESNEXT and `KEY VALUE` overrides."""
    cfg = get_cfg()
    resnext_det.add_resnext_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.merge_from_list(list(overrides))
    return cfg


STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def pycocotools_stats(json_file, results, iou_type="bbox"):
    """{AP, AP50, ...} (percent) of COCO `results` on `json_file`, by pycocotools' COCOeval
    run here; NaN where pycocotools says -1 (no object of that size), as detectron2 writes."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(json_file))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {k: 100 * s if s >= 0 else math.nan for k, s in zip(STATS, coco_eval.stats[:6])}


ORACLE_SET = "detectron2_oracle"  # the set detectron2_detections registers, to its own files


def detectron2_detections(config_file, weights, json_file, image_root, output_dir):
    """COCO results of the checkpoint `weights` on a COCO json's images, by detectron2 alone:
    the model of the run's written config (a YAML config: build_model, resnext_det only
    registering the backbone; a Python one, saved by LazyConfig.save: LazyConfig.load and
    instantiate), DetectionCheckpointer, build_detection_test_loader, inference_on_dataset
    and COCOEvaluator (instances_to_coco_json; its results file in `output_dir`). None of
    resnext_det's engine: not its Trainer, checkpointer, FAST_INFERENCE copy,
    INFERENCE_DTYPE, ROI_ALIGN or evaluator."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    register_coco_file(ORACLE_SET, json_file, image_root)
    model, loader = _detectron2_model_and_loader(Path(config_file))
    DetectionCheckpointer(model).load(str(weights))
    evaluator = COCOEvaluator(ORACLE_SET, tasks=("bbox",), distributed=False,
                              output_dir=str(output_dir))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' summary
        inference_on_dataset(model.eval(), loader, evaluator)
    return json.loads((Path(output_dir) / "coco_instances_results.json").read_text())


def _detectron2_model_and_loader(config_file):
    """detectron2's model and test loader (over ORACLE_SET) of a run's written config."""
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    if "_target_" in config_file.read_text():  # LazyConfig.save's file
        cfg = LazyConfig.load(str(config_file))
        cfg.dataloader.test.dataset.names = ORACLE_SET
        return instantiate(cfg.model), instantiate(cfg.dataloader.test)
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(config_file))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg), build_detection_test_loader(cfg, ORACLE_SET)


def assert_same_detections(results, expected):
    """The same boxes, classes and scores (to 1e-3: float rounding) on each image of the COCO
    results `expected`, each image with some."""
    got, expected = _by_image(results), _by_image(expected)
    assert got.keys() == expected.keys() and expected
    for image_id, boxes in expected.items():
        assert got[image_id].shape == boxes.shape and boxes.shape[0] > 0
        assert (got[image_id] - boxes).abs().max() < 1e-3, image_id


def _by_image(results):
    """{image id: (N, 6) tensor of score, class id and XYWH box, by score} of COCO results."""
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append([r["score"], r["category_id"], *r["bbox"]])
    return {k: torch.tensor(sorted(v, reverse=True)) for k, v in by_image.items()}


# what a rerun of the same iterations changes in metrics.json's training records
RUN_TIMES = ("time", "data_time", "rank_data_time", "eta_seconds", "[metric]images_per_s")


def training_records(output_dir):
    """OUTPUT_DIR/metrics.json's training records (those with "lr", which detectron2's
    LRScheduler hook puts) in the file's order, without the RUN_TIMES, each with the records
    of its iteration that have no "lr" merged in: an evaluation's, which detectron2 writes
    into the training record of a logged iteration, and a resumed run that redid it after a
    kill into a record of its own."""
    records = [json.loads(line) for line in
               (Path(output_dir) / "metrics.json").read_text().splitlines()]
    alone = {}
    for r in records:
        if "lr" not in r:
            alone.setdefault(r["iteration"], {}).update(r)
    return [{k: v for k, v in {**alone.get(r["iteration"], {}), **r}.items()
             if k not in RUN_TIMES} for r in records if "lr" in r]


def register_coco_json(name, path, data, image_root):
    """Write the COCO dict `data` to `path` and register it as `name` (again, if it was)
    with detectron2's register_coco_instances."""
    path.write_text(json.dumps(data))
    register_coco_file(name, path, image_root)


def register_coco_file(name, json_file, image_root):
    """Register the COCO file `json_file` as `name` (again, if it was) with detectron2's
    register_coco_instances: its classes and ids from the file, not resnext_det's
    registration."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_file), str(image_root))


def weight_changes(weights, start):
    """What training changed (float64): all parameters (and constant buffers) as one vector,
    all running means as another, for max_rel_error. Not running_var: detectron2's
    naiveSyncBN (world size > 1) updates it with the biased batch variance, torch's
    BatchNorm (what naiveSyncBN runs on one process) with the unbiased one, so W processes'
    is smaller by (N - 1) / N, N the norm's values per batch (measured to 1e-5); nor
    num_batches_tracked, which naiveSyncBN does not count."""
    stats = ("running_mean", "running_var", "num_batches_tracked")
    groups = {"parameters": [k for k in start if not k.endswith(stats)],
              "running means": [k for k in start if k.endswith("running_mean")]}
    return {group: torch.cat([(weights[k].double() - start[k].double()).flatten() for k in keys])
            for group, keys in groups.items()}


def load_tool(name):
    """Import tools/<name>.py (tools/ holds scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def captured(name, tracebacks=False):
    """The messages logged to `name` (INFO and up), whatever handlers earlier tests set up;
    with `tracebacks`, each with the traceback of its exception, as a handler prints it."""
    records, handler = [], logging.Handler()
    handler.emit = lambda record: records.append(
        handler.format(record) if tracebacks else record.getMessage())
    log = logging.getLogger(name)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@contextmanager
def lock_held_elsewhere(folder):
    """Another process that holds `folder`'s lock (utils/io.lock_folder), as a running
    training or prediction does; yields it (its pid is what the errors name)."""
    code = ("import sys, time; from resnext_det.utils.io import lock_folder; "
            "assert lock_folder(sys.argv[1]) is None; print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
