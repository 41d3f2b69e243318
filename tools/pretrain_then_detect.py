#!/usr/bin/env python
"""Pretrain on digits classification, fine-tune the detection demo, compare with scratch.

    python tools/pretrain_then_detect.py --cls-epochs 100 --det-iters 800   # 11 min on 2 CPU cores

The whole pipeline on the digits demo set:
1. build (or reuse) the digits set, which holds both the detection images and the
   ImageNet-style classification folder, and register it (digits_train, digits_val);
2. pretrain configs/cls/digits_X50_8x4d.yaml (the demo detector's backbone) for
   `cls_epochs` epochs on the classification folder;
3. train configs/demo/faster_rcnn_X50_digits.yaml for `det_iters` iterations from its
   model_final.pkl (MODEL.WEIGHTS, nothing else changed), as tools/demo.py does;
4. train the same detector from scratch with the same iterations;
5. report both box APs and the times.
The detection schedule is the demo's, scaled: steps at 1100/1500 and 1350/1500 of it.
Writes <output>/{pretrain,finetune,scratch}/ and <output>/summary.json.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import importlib.util
import json
import os
import time

import resnext_det  # noqa: F401  (registers the backbones and the C4 ROI head)
from resnext_det.classification import get_cls_cfg
from resnext_det.classification.main import main as pretrain_main
from resnext_det.data import digits_root, ensure_digits_dataset
from resnext_det.utils.cli import ExitOnUserError
from resnext_det.utils.io import FolderError, atomic_write, claim_folder, release_folder

TOOLS = os.path.dirname(os.path.abspath(__file__))


def _load_demo():
    """tools/demo.py, the detection half (tools/ holds scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("tools_demo", os.path.join(TOOLS, "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()
CLS_CONFIG = os.path.normpath(os.path.join(TOOLS, "..", "configs", "cls", "digits_X50_8x4d.yaml"))
DEMO_ITERS, DEMO_STEPS = 1500, (1100, 1350)


def detection_budget(det_iters):
    """KEY VALUE overrides giving the demo detector `det_iters` iterations, steps scaled."""
    scaled = (round(det_iters * s / DEMO_ITERS) for s in DEMO_STEPS)
    steps = tuple(sorted({s for s in scaled if 1 <= s < det_iters}))  # few iterations: fewer steps
    return ["SOLVER.MAX_ITER", str(det_iters), "SOLVER.STEPS", str(steps),
            "SOLVER.WARMUP_ITERS", str(min(100, det_iters // 5)),
            "SOLVER.CHECKPOINT_PERIOD", str(det_iters), "TEST.EVAL_PERIOD", "0"]


def cls_warmup_epochs(cls_epochs):
    """The digits config's SOLVER.WARMUP_EPOCHS, cut to a shorter run (--cls-epochs 1)."""
    cfg = get_cls_cfg()
    cfg.merge_from_file(CLS_CONFIG)
    return min(cfg.SOLVER.WARMUP_EPOCHS, float(cls_epochs))


def pretrain(output_dir, cls_epochs, extra_opts=()):
    """Pretrain on the digits classification folder; returns (weights path, eval, seconds)."""
    start = time.perf_counter()
    demo.claim_demo_output(output_dir)  # refused: another run's files, or its lock (it runs)
    try:
        demo.clear_previous_demo(output_dir)  # the pipeline starts anew, as the demo does
        opts = ["DATA.ROOT", os.path.join(digits_root(), "classification"),
                "SOLVER.MAX_EPOCHS", str(cls_epochs), "SOLVER.WARMUP_EPOCHS",
                str(cls_warmup_epochs(cls_epochs)), "OUTPUT_DIR", output_dir, *extra_opts]
        args = argparse.Namespace(config_file=CLS_CONFIG, opts=opts, eval_only=False,
                                  resume=False, num_gpus=1, num_machines=1, machine_rank=0,
                                  dist_url="auto")
        result = pretrain_main(args)  # takes the lock this process holds
    finally:
        release_folder(output_dir)  # the claim's take
    return os.path.join(output_dir, "model_final.pkl"), result, time.perf_counter() - start


def detect(output_dir, det_iters, weights=""):
    summary = demo.run_demo(demo.DEMO_CONFIG, ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", output_dir]
                            + detection_budget(det_iters))
    return {k: summary[k] for k in ("AP", "AP50", "seconds")}


PIPELINE_MARK = ".pretrain_then_detect_output"  # in every --output the pipeline wrote
PIPELINE_FILES = ("pretrain", "finetune", "scratch", "summary.json")  # all it writes there


def claim_pipeline_output(output_root):
    """--output new, empty or the pipeline's (its mark), and locked: a summary.json or other
    files of the user's there were replaced or left beside the new run's."""
    others = claim_folder(output_root, PIPELINE_MARK, "tools/pretrain_then_detect.py writes "
                          "here\n", own=PIPELINE_FILES)
    if others:
        raise FolderError(f"--output {output_root!r} holds {len(others)} files that "
                          f"pretrain_then_detect did not write (e.g. {others[0]!r}); give a new "
                          "or empty folder.")


def run_pipeline(output_root="output/pretrain_then_detect", cls_epochs=100, det_iters=800):
    """Steps 1-5; returns and writes <output_root>/summary.json."""
    claim_pipeline_output(output_root)
    try:
        summary_file = os.path.join(output_root, "summary.json")
        if os.path.exists(summary_file):  # an earlier run's: its folders are cleared below
            os.remove(summary_file)
        ensure_digits_dataset(digits_root(), **demo.DATASET)  # registers digits_train / digits_val
        weights, cls_eval, cls_seconds = pretrain(os.path.join(output_root, "pretrain"),
                                                  cls_epochs)
        summary = {
            "cls_epochs": cls_epochs, "det_iters": det_iters,
            "pretrain": {"top1_err": cls_eval["top1_err"], "seconds": cls_seconds,
                         "weights": weights},
            "pretrained": detect(os.path.join(output_root, "finetune"), det_iters, weights),
            "scratch": detect(os.path.join(output_root, "scratch"), det_iters),
        }
        atomic_write(summary_file, lambda f: f.write(json.dumps(summary, indent=2).encode()))
    finally:
        release_folder(output_root)  # the claim's take
    print(format_summary(summary))
    return summary


def format_summary(s):
    p = s["pretrain"]
    lines = [f"Digits pretraining: {s['cls_epochs']} epochs, val top-1 error "
             f"{p['top1_err']:.2f}%, {p['seconds'] / 60:.1f} min",
             f"Detector, {s['det_iters']} iterations each (box AP / AP50 on digits_val):"]
    for name in ("pretrained", "scratch"):
        r = s[name]
        lines.append(f"  {name:<10} AP {r['AP']:.1f}  AP50 {r['AP50']:.1f}  "
                     f"{r['seconds'] / 60:.1f} min")
    return "\n".join(lines)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cls-epochs", type=int, default=100, help="pretraining epochs")
    parser.add_argument("--det-iters", type=int, default=800,
                        help="detection iterations, for each of the two detectors (demo: 1500)")
    parser.add_argument("--output", default="output/pretrain_then_detect")
    args = parser.parse_args(argv)
    for option, value in (("--cls-epochs", args.cls_epochs), ("--det-iters", args.det_iters)):
        if value < 1:
            parser.error(f"{option} {value}: expected >= 1")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output!r} is a file; expected a folder")
    return args


if __name__ == "__main__":
    args = parse()
    print(f"Budget: {args.cls_epochs} pretraining epochs, "
          f"{args.det_iters} detection iterations for each detector")
    ExitOnUserError(run_pipeline)(args.output, cls_epochs=args.cls_epochs,
                                  det_iters=args.det_iters)  # bad input: one line, exit 2
