#!/usr/bin/env python
"""Speed of our ResNeXt against torchvision's and detectron2's built-in, in one run.

    python benchmarks/bench.py                     # everything, CPU threads = all cores
    python benchmarks/bench.py --only classifier --repeats 10
    python benchmarks/bench.py --only train        # the training iteration alone
    python benchmarks/bench.py --device cuda --amp  # on a GPU, fp16 and bf16 autocast too
    python benchmarks/bench.py --smoke --amp       # every code path on small inputs (minutes)

Every comparison runs on the same inputs with the same weights: outputs (losses for
training) are checked to agree before a speed is reported. Each peer is timed as
configured and as a user tunes it (channels_last), and ours against both: "vs peer" and
"vs peer NHWC" > 1 mean ours is faster. Times are medians over repeats after warm-up,
the contenders' repeats interleaved, with the thread count fixed. Random weights: speed
does not depend on their values.
"""
import argparse
import copy
import os
import sys
from functools import partial

import torch
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import (  # noqa: E402
    build_detectors,
    classifier_pair,
    coco_eval_pair,
    detector_inputs,
    outputs_agree,
)
from timing import autocast_call, autocast_dtypes, dtype_name, median_times  # noqa: E402
from training import bench_training  # noqa: E402

from resnext_det.modeling.inference import optimize_for_inference  # noqa: E402
from resnext_det.utils.testing import detection_error, max_rel_error  # noqa: E402

# ResNeXt-50 32x4d at 224x224: 4.26 G multiply-adds (tools/analyze_complexity.py) = 8.5 GFLOP.
CLASSIFIER_GFLOP = 2 * 4.26
HEADERS = ["benchmark", "implementation", "median ms", "images/s", "vs peer", "vs peer NHWC",
           "max rel err / note"]


def add_rows(rows, name, times, images, notes, peer=None, tuned=None, measured=None):
    """One row per entry of `times` (label -> seconds), with speed ratios against the
    labels `peer` (as configured) and `tuned` (channels_last); None: no such column. A label
    may also name a time of `measured` (the same run's float32 rows), which gets no row."""
    known = {**(measured or {}), **times}
    for label, seconds in times.items():
        ratio = lambda base: None if base is None else known[base] / seconds  # noqa: E731
        rows.append([name, label, seconds, None if images is None else images / seconds,
                     ratio(peer), ratio(tuned), notes.get(label, "")])


def matmul_gflops(device, n=4096, repeats=5):
    """Dense float32 matmul throughput: the ceiling that convolutions can approach."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = median_times({"mm": lambda: a @ b}, 2, repeats, device)["mm"]
    return 2 * n**3 / seconds / 1e9


def nhwc(module):
    return copy.deepcopy(module).to(memory_format=torch.channels_last)


def bench_classifier(args, rows):
    ours, theirs = classifier_pair(args.device)
    contenders = {"torchvision eager": theirs, "torchvision channels_last": nhwc(theirs),
                  "ours eager": ours,
                  "ours folded": optimize_for_inference(ours, channels_last=False),
                  "ours folded+NHWC": optimize_for_inference(ours)}
    gflop = CLASSIFIER_GFLOP * (args.cls_size / 224) ** 2
    for batch in (1, 8):
        x = torch.randn(batch, 3, args.cls_size, args.cls_size, device=args.device)
        inputs = {label: x.to(memory_format=torch.channels_last) if "channels_last" in label else x
                  for label in contenders}
        name = f"classifier X50_32x4d {args.cls_size} batch {batch}"
        with torch.no_grad():
            reference = theirs(x)
            errors = {label: max_rel_error(m(inputs[label]), reference)
                      for label, m in contenders.items()}
            assert max(errors.values()) < 1e-4, f"outputs differ from torchvision's: {errors}"
            times = median_times({label: (lambda m=m, i=inputs[label]: m(i))
                                  for label, m in contenders.items()},
                                 args.warmup, args.repeats, args.device)
        notes = {label: f"{errors[label]:.1e}; {batch * gflop / t:.0f} GFLOP/s"
                 for label, t in times.items()}
        add_rows(rows, name, times, batch, notes, "torchvision eager", "torchvision channels_last")
        if args.amp:
            bench_autocast_classifier(args, rows, name, contenders, inputs, reference)


def bench_autocast_classifier(args, rows, name, contenders, inputs, reference):
    """Autocast of the tuned peer and our fast model: reported with the error against
    float32, not held to 1e-4 (another numeric contract)."""
    picked = ("torchvision channels_last", "ours folded+NHWC")
    for dtype in autocast_dtypes(args.device):
        tag = dtype_name(dtype)
        calls = {f"{label} {tag}": partial(autocast_call, args.device, dtype, contenders[label],
                                           inputs[label]) for label in picked}
        with torch.no_grad():
            errors = {label: max_rel_error(call(), reference) for label, call in calls.items()}
            assert max(errors.values()) < 5e-2, f"{tag} output too far from float32: {errors}"
            times = median_times(calls, args.warmup, args.repeats, args.device)
        notes = {label: f"{err:.1e} ({tag})" for label, err in errors.items()}
        add_rows(rows, f"{name}, {tag} autocast", times, inputs[picked[0]].shape[0], notes,
                 tuned=f"{picked[0]} {tag}")


def bench_detectors(args, rows):
    for kind in ("C4", "FPN"):
        ours, theirs = build_detectors(kind, args.device)
        inputs = detector_inputs(args.device, batch=1, size=args.det_size)
        contenders = {"detectron2 built-in": theirs}
        if kind == "FPN":
            contenders["detectron2 built-in channels_last"] = nhwc(theirs)
        contenders["ours folded+NHWC"] = optimize_for_inference(ours)
        with torch.no_grad():
            reference = theirs(inputs)
            errors = {label: outputs_agree(m(inputs), reference) for label, m in contenders.items()}
            times = median_times({label: (lambda m=m: m(inputs)) for label, m in contenders.items()},
                                 1, args.det_repeats, args.device)
        name = f"Faster R-CNN X50_32x4d {kind} {args.det_size[0]}x{args.det_size[1]}"
        tuned = "detectron2 built-in channels_last" if kind == "FPN" else None
        add_rows(rows, name, times, 1, {k: f"{e:.1e}" for k, e in errors.items()},
                 "detectron2 built-in", tuned)
        if kind == "FPN" and args.amp:
            bench_autocast_detector(args, rows, name, contenders, inputs, reference, times)


def bench_autocast_detector(args, rows, name, contenders, inputs, reference, float32_times):
    """Autocast FPN inference of the tuned peer and ours; "vs peer" is against detectron2's
    built-in in float32 (`float32_times`, the same run). Detections are compared with
    float32's but not held to them: rounding moves scores across the 0.05 threshold."""
    picked = ("detectron2 built-in channels_last", "ours folded+NHWC")
    for dtype in autocast_dtypes(args.device):
        tag = dtype_name(dtype)
        calls = {f"{label} {tag}": partial(autocast_call, args.device, dtype, contenders[label], inputs)
                 for label in picked}
        with torch.no_grad():
            notes = {label: _detections_note(call(), reference, tag) for label, call in calls.items()}
            times = median_times(calls, 1, args.amp_repeats, args.device)
        add_rows(rows, f"{name}, {tag} autocast", times, 1, notes, peer="detectron2 built-in",
                 tuned=f"{picked[0]} {tag}", measured=float32_times)


def _detections_note(outputs, reference, tag):
    got, expected = outputs[0]["instances"], reference[0]["instances"]
    if len(got) != len(expected):
        return f"{len(got)} vs {len(expected)} detections ({tag})"
    return f"{detection_error(got, expected):.1e} ({tag})"


def bench_train(args, rows):
    ours, theirs = build_detectors("FPN", args.device)
    bench_training(args, rows, ours, theirs, add_rows)


def bench_coco_eval(args, rows):
    # the large set: 5,000 images, 100,000 detections (--smoke: 200 images)
    ours, theirs, count = coco_eval_pair(num_images=200 if args.smoke else 5000, per_image=20)
    times = median_times({"pycocotools COCOeval": theirs, "ours (COCOMetricsEvaluator)": ours},
                         0, 3, "cpu")
    add_rows(rows, f"COCO eval, {count} detections", times, None,
             {"ours (COCOMetricsEvaluator)": "equal AP"}, "pycocotools COCOeval")


def profile_classifier(args):
    """Where the time of our fast classifier goes: top ops by self time, batch 8."""
    ours, _ = classifier_pair(args.device)
    fast = optimize_for_inference(ours)
    x = torch.randn(8, 3, args.cls_size, args.cls_size, device=args.device)
    with torch.no_grad():
        for _ in range(args.warmup):
            fast(x)
        with torch.profiler.profile() as prof:
            for _ in range(3):
                fast(x)
    print("\nProfile of ours folded+NHWC, batch 8, 3 runs (self time per op):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


BENCHES = {"classifier": bench_classifier, "detector": bench_detectors, "train": bench_train,
           "coco": bench_coco_eval}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--det-repeats", type=int, default=3, help="detector and training repeats")
    parser.add_argument("--amp-repeats", type=int, default=3, help="autocast detector / training")
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--profile", action="store_true", help="also profile our classifier")
    parser.add_argument("--amp", action="store_true",
                        help="also time autocast: bf16 on CPUs; fp16 and bf16 on GPUs")
    parser.add_argument("--smoke", action="store_true",
                        help="small inputs, one repeat: checks every path, times nothing useful")
    parser.add_argument("--markdown", help="also write the table as markdown to this file")
    parser.add_argument("--keep-going", action="store_true",
                        help="a failed check becomes a row of the table, and the run goes on")
    args = parser.parse_args(argv)
    args.cls_size, args.det_size = (64, (160, 256)) if args.smoke else (224, (800, 1333))
    if args.smoke:
        args.warmup, args.repeats, args.det_repeats, args.amp_repeats = 0, 1, 1, 1
    return args


def run_bench(args, rows, name):
    """BENCHES[name]; with --keep-going a failed check is a row, not the end of the run."""
    try:
        BENCHES[name](args, rows)
    except (AssertionError, RuntimeError) as e:  # a check, or an op the device lacks
        if not args.keep_going:
            raise
        rows.append([name, f"FAILED ({type(e).__name__}): not timed", float("nan"), None, None,
                     None, " ".join(str(e).split())[:200]])


def _cell(value, fmt):
    return "" if value is None else fmt.format(value)


def format_rows(rows):
    """Table cells; a benchmark's name only on its first row."""
    names = [r[0] if i == 0 or r[0] != rows[i - 1][0] else "" for i, r in enumerate(rows)]
    return [[name, r[1], f"{r[2] * 1000:.1f}", _cell(r[3], "{:.2f}"), _cell(r[4], "{:.2f}x"),
             _cell(r[5], "{:.2f}x"), r[6]] for name, r in zip(names, rows)]


def write_markdown(path, header, rows):
    with open(path, "w") as f:
        f.write(f"{header}\n\n{tabulate(format_rows(rows), headers=HEADERS, tablefmt='github')}\n")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        # float32 rows are held to 1e-4: TF32 (cuDNN's default for convolutions) is not
        # float32, so it is off; autocast rows are where reduced precision is timed.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True  # as users tune it, for every contender
    torch.manual_seed(0)
    rows = []
    ceiling = matmul_gflops(args.device)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    header = (f"torch {torch.__version__}, device {args.device} ({device_name}), threads "
              f"{args.threads}, 4096x4096 float32 matmul {ceiling:.0f} GFLOP/s")
    for name in BENCHES:
        if name in args.only:
            run_bench(args, rows, name)
            if args.markdown:  # after each benchmark: a run cut short keeps what it measured
                write_markdown(args.markdown, header, rows)
    print(header)
    print(tabulate(format_rows(rows), headers=HEADERS))
    if args.profile:
        profile_classifier(args)
    return rows


if __name__ == "__main__":
    main()
