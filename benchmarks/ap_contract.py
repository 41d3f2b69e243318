#!/usr/bin/env python
"""The AP contract of MODEL.RESNEXT.INFERENCE_DTYPE: a trained model's COCO numbers in
float32 and in each lower precision the device runs, with the time per image.

    DETECTRON2_DATASETS=/tmp/d2data python benchmarks/ap_contract.py \\
        --config-file configs/demo/faster_rcnn_X50_digits.yaml MODEL.WEIGHTS output/demo/model_final.pth
    python benchmarks/ap_contract.py ... --dtype bfloat16 --max-images 50   # a quick look

MODEL.WEIGHTS is evaluated on DATASETS.TEST[0] (or --dataset-name) as Trainer.test
evaluates it (the copy inference_model makes: MODEL.RESNEXT.FAST_INFERENCE, then
INFERENCE_DTYPE; the project's COCO evaluator writes each type's detections to
OUTPUT_DIR/<dtype>/), once per type: float32, then those of timing.autocast_dtypes
(bfloat16 on the CPU; float16 and, where supported, bfloat16 on CUDA). The 12 COCO box
numbers of each come from pycocotools' COCOeval run here on those detections. Time per
image is the model's forward alone (batch 1, after --warmup images), as detectron2's
inference_on_dataset counts "pure compute time".

The contract: box AP within --tolerance (0.3) of float32's; exit status 1 when a type
misses it, 2 on bad input (`error: ...`).
"""
import argparse
import contextlib
import io
import json
import math
import os
import sys
import time

import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_context
from detectron2.modeling import build_model
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate
from timing import autocast_dtypes

import resnext_det  # noqa: F401  (registers the backbones and heads)
from resnext_det.config.errors import ConfigError
from resnext_det.data import register_digits_named_in
from resnext_det.data.coco_json import add_dataset_argument, register_dataset_args
from resnext_det.engine import Trainer, setup_cfg, task_of
from resnext_det.engine.checks import check_datasets, check_weights
from resnext_det.engine.trainer import inference_model
from resnext_det.engine.weights import build_checkpointer
from resnext_det.evaluation.coco import RESULTS_FILE
from resnext_det.utils.cli import ExitOnUserError, run_tool

# pycocotools' COCOeval.stats, in its order (summarize() prints them so).
COCO_NUMBERS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class TimedModel(torch.nn.Module):
    """`model`, each forward's seconds appended to `seconds` (CUDA synchronized)."""

    def __init__(self, model, device):
        super().__init__()
        self.model, self.cuda, self.seconds = model, device.startswith("cuda"), []

    def forward(self, inputs):
        start = time.perf_counter()
        outputs = self.model(inputs)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - start)
        return outputs


def evaluate(cfg, model, dataset, dicts, dtype, warmup):
    """Detections of `model` run as INFERENCE_DTYPE=`dtype` on `dicts`, through the project's
    evaluator (which writes them to OUTPUT_DIR/<dtype>/); returns (results path, seconds
    per image after `warmup` images)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNEXT.INFERENCE_DTYPE = dtype
    timed = TimedModel(inference_model(cfg, model), cfg.MODEL.DEVICE)
    folder = os.path.join(cfg.OUTPUT_DIR, dtype)
    evaluator = Trainer.build_evaluator(cfg, dataset, output_folder=folder)
    evaluator.reset()
    loader = build_detection_test_loader(dicts, mapper=DatasetMapper(cfg, is_train=False))
    with inference_context(timed), torch.no_grad():
        for inputs in loader:
            evaluator.process(inputs, timed(inputs))
    evaluator.evaluate(img_ids=[d["image_id"] for d in dicts])
    kept = timed.seconds[warmup:] or timed.seconds
    return os.path.join(folder, RESULTS_FILE), sum(kept) / len(kept)


def coco_numbers(coco_gt, results_path, img_ids):
    """pycocotools' 12 box numbers (percent) of the detections in `results_path`."""
    with open(results_path) as f:
        results = json.load(f)
    if not results:
        return dict.fromkeys(COCO_NUMBERS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # loadRes and summarize print
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    # -1: no ground truth in that area range (detectron2 shows nan)
    return {name: 100.0 * float(v) if v >= 0 else float("nan")
            for name, v in zip(COCO_NUMBERS, coco_eval.stats)}


def _number(value, form=".2f"):
    return "n/a" if math.isnan(value) else format(value, form)


def table(numbers, times):
    """Markdown rows: each COCO number per type, the difference of each lower type to float32."""
    lower = [d for d in numbers if d != "float32"]
    header = ["", "float32"] + [x for d in lower for x in (d, f"{d} - float32")]
    rows = []
    for name in COCO_NUMBERS:
        ref = numbers["float32"][name]
        row = [name, _number(ref)]
        for d in lower:
            row += [_number(numbers[d][name]), _number(numbers[d][name] - ref, "+.2f")]
        rows.append(row)
    row = ["ms / image", f"{1e3 * times['float32']:.1f}"]
    for d in lower:
        row += [f"{1e3 * times[d]:.1f}", f"{times[d] / times['float32']:.2f}x"]
    rows.append(row)
    return tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)


def main(args):
    args = register_dataset_args(args)
    cfg = setup_cfg(args, task=task_of(args))
    register_digits_named_in(cfg)
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS", "", "the trained weights to measure",
                          "e.g. MODEL.WEIGHTS output/demo/model_final.pth (after `make demo`).")
    check_weights(cfg)
    check_datasets(cfg, fields=("TEST",))
    dataset = args.dataset_name or cfg.DATASETS.TEST[0]
    dicts = DatasetCatalog.get(dataset)[:args.max_images]
    json_file = MetadataCatalog.get(dataset).get("json_file", None)
    if not json_file:
        raise ConfigError("DATASETS.TEST", dataset, "a dataset registered from a COCO json")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(json_file)
    model = build_model(cfg)
    build_checkpointer(cfg, model).load(cfg.MODEL.WEIGHTS)
    lower = [str(d).removeprefix("torch.") for d in autocast_dtypes(cfg.MODEL.DEVICE)]
    dtypes = ["float32"] + (args.dtypes or lower)
    numbers, times = {}, {}
    for dtype in dtypes:
        path, times[dtype] = evaluate(cfg, model.eval(), dataset, dicts, dtype, args.warmup)
        numbers[dtype] = coco_numbers(coco_gt, path, [d["image_id"] for d in dicts])
        print(f"{dtype}: box AP {numbers[dtype]['AP']:.2f}, {1e3 * times[dtype]:.1f} ms / image",
              flush=True)
    report = [f"{dataset}, {len(dicts)} images, MODEL.DEVICE={cfg.MODEL.DEVICE}, "
              f"{torch.get_num_threads()} threads, FAST_INFERENCE="
              f"{cfg.MODEL.RESNEXT.FAST_INFERENCE!r}:", table(numbers, times)]
    missed = [d for d in dtypes[1:]
              if abs(numbers[d]["AP"] - numbers["float32"]["AP"]) > args.tolerance]
    for d in dtypes[1:]:
        diff = numbers[d]["AP"] - numbers["float32"]["AP"]
        report.append(f"{d}: box AP {diff:+.2f} against float32: "
                      f"{'outside' if d in missed else 'within'} the contract (+-{args.tolerance}).")
    print("\n" + "\n\n".join(report))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n\n".join(report) + "\n")
    return 1 if missed else 0


def _count(lowest):
    def parse(text):
        if not text.isdigit() or int(text) < lowest:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= {lowest}")
        return int(text)
    return parse


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--dataset-name", help="a registered dataset (default DATASETS.TEST[0])")
    parser.add_argument("--dtype", action="append", dest="dtypes", choices=["bfloat16", "float16"],
                        help="a lower precision to measure, repeatable (default: those the "
                             "device runs)")
    parser.add_argument("--max-images", type=_count(1), default=None, help="the first N images only")
    parser.add_argument("--warmup", type=_count(0), default=5, help="images left out of the time")
    parser.add_argument("--tolerance", type=float, default=0.3, help="largest |AP difference|")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the report (the table and the verdicts) to FILE")
    parser.add_argument("--output", default="output/ap_contract",
                        help="OUTPUT_DIR: the log, config and each type's detections")
    add_dataset_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def run(argv=None):
    args = argument_parser().parse_args(argv)
    args.opts = ["OUTPUT_DIR", args.output] + args.opts
    args.eval_only = True
    return run_tool(lambda: ExitOnUserError(main)(args))


if __name__ == "__main__":
    sys.exit(run())
