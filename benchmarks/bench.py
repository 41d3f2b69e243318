#!/usr/bin/env python
"""Speed of our ResNeXt against torchvision's and detectron2's built-in, in one run.

    python benchmarks/bench.py                     # everything, CPU threads = all cores
    python benchmarks/bench.py --only classifier --repeats 10
    python benchmarks/bench.py --device cuda --amp  # on a GPU, bf16 autocast too

Every comparison runs on the same inputs with the same weights: outputs are checked to
agree (max relative error < 1e-4) before a speed is reported. Times are medians over
--repeats runs after --warmup runs, with the thread count fixed. Ratios > 1 mean ours is
faster. Random weights: speed does not depend on their values.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from detectron2.utils.events import EventStorage
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import (  # noqa: E402
    build_detectors,
    classifier_pair,
    coco_eval_pair,
    detector_inputs,
    outputs_agree,
)

from resnext_det.modeling.inference import optimize_for_inference  # noqa: E402
from resnext_det.utils.testing import max_rel_error  # noqa: E402


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, warmup, repeats, device):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ResNeXt-50 32x4d at 224x224: 4.26 G multiply-adds (tools/analyze_complexity.py) = 8.5 GFLOP.
CLASSIFIER_GFLOP = 2 * 4.26


def matmul_gflops(device, n=4096, repeats=5):
    """Dense float32 matmul throughput: the ceiling that convolutions can approach."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = median_time(lambda: a @ b, 2, repeats, device)
    return 2 * n**3 / seconds / 1e9


def bench_classifier(args, rows):
    ours, theirs = classifier_pair(args.device)
    variants = {"ours eager": ours,
                "ours folded": optimize_for_inference(ours, channels_last=False),
                "ours folded+NHWC": optimize_for_inference(ours)}
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224, device=args.device)
        name = f"classifier X50_32x4d 224 batch {batch}"
        with torch.no_grad():
            reference = theirs(x)
            t_theirs = median_time(lambda: theirs(x), args.warmup, args.repeats, args.device)
            rows.append([name, "torchvision eager", t_theirs, batch / t_theirs, 1.0, ""])
            for label, model in variants.items():
                err = max_rel_error(model(x), reference)
                assert err < 1e-4, f"{label} differs from torchvision: {err:.2e}"
                t = median_time(lambda: model(x), args.warmup, args.repeats, args.device)
                gflops = batch * CLASSIFIER_GFLOP / t
                rows.append([name, label, t, batch / t, t_theirs / t,
                             f"{err:.1e}; {gflops:.0f} GFLOP/s"])
            if args.amp:
                bench_bf16(args, rows, name, variants["ours folded+NHWC"], x, reference, t_theirs)


def bench_bf16(args, rows, name, model, x, reference, t_theirs):
    """bf16 autocast of our fast model: reported with its error, not held to 1e-4."""
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    with torch.autocast(device_type, dtype=torch.bfloat16):
        err = max_rel_error(model(x), reference)
        assert err < 5e-2, f"bf16 output too far from float32: {err:.2e}"
        t = median_time(lambda: model(x), args.warmup, args.repeats, args.device)
    rows.append([name, "ours folded+NHWC bf16 autocast", t, x.shape[0] / t, t_theirs / t,
                 f"{err:.1e} (bf16)"])


def bench_detectors(args, rows):
    for kind in ("C4", "FPN"):
        ours, theirs = build_detectors(kind, args.device)
        fast = optimize_for_inference(ours)
        inputs = detector_inputs(args.device, batch=1)
        with torch.no_grad():
            err = outputs_agree(fast(inputs), theirs(inputs))
            t_theirs = median_time(lambda: theirs(inputs), 1, args.det_repeats, args.device)
            t_fast = median_time(lambda: fast(inputs), 1, args.det_repeats, args.device)
        name = f"Faster R-CNN X50_32x4d {kind} 800x1333"
        rows.append([name, "detectron2 built-in", t_theirs, 1 / t_theirs, 1.0, ""])
        rows.append([name, "ours folded+NHWC", t_fast, 1 / t_fast, t_theirs / t_fast, f"{err:.1e}"])
        if kind == "FPN":
            bench_training(args, rows, ours, theirs)


def bench_training(args, rows, ours, theirs):
    inputs = detector_inputs(args.device, batch=2, with_targets=True)

    def step(model):
        model.train()
        with EventStorage():  # detectron2's losses log into the current storage
            losses = model(inputs)
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    t_theirs = median_time(lambda: step(theirs), 1, args.det_repeats, args.device)
    t_ours = median_time(lambda: step(ours), 1, args.det_repeats, args.device)
    name = "train iteration FPN X50_32x4d batch 2"
    rows.append([name, "detectron2 built-in", t_theirs, 2 / t_theirs, 1.0, ""])
    rows.append([name, "ours", t_ours, 2 / t_ours, t_theirs / t_ours, "same module tree"])


def bench_coco_eval(args, rows):
    ours, theirs, count = coco_eval_pair()
    t_theirs = median_time(theirs, 0, 3, "cpu")
    t_ours = median_time(ours, 0, 3, "cpu")
    name = f"COCO eval, {count} detections"
    rows.append([name, "pycocotools COCOeval", t_theirs, None, 1.0, ""])
    rows.append([name, "ours (COCOMetricsEvaluator)", t_ours, None, t_theirs / t_ours, "equal AP"])


def profile_classifier(args):
    """Where the time of our fast classifier goes: top ops by self time, batch 8."""
    ours, _ = classifier_pair(args.device)
    fast = optimize_for_inference(ours)
    x = torch.randn(8, 3, 224, 224, device=args.device)
    with torch.no_grad():
        for _ in range(args.warmup):
            fast(x)
        with torch.profiler.profile() as prof:
            for _ in range(3):
                fast(x)
    print("\nProfile of ours folded+NHWC, batch 8, 3 runs (self time per op):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


BENCHES = {"classifier": bench_classifier, "detector": bench_detectors, "coco": bench_coco_eval}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--det-repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=sorted(BENCHES))
    parser.add_argument("--profile", action="store_true", help="also profile our classifier")
    parser.add_argument("--amp", action="store_true", help="also time bf16 autocast (classifier)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    ceiling = matmul_gflops(args.device)
    for name in ("classifier", "detector", "coco"):
        if name in args.only:
            BENCHES[name](args, rows)
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}, "
          f"4096x4096 float32 matmul {ceiling:.0f} GFLOP/s")
    print(tabulate([[r[0], r[1], f"{r[2] * 1000:.1f}", "" if r[3] is None else f"{r[3]:.2f}",
                     f"{r[4]:.2f}x", r[5]] for r in rows],
                   headers=["benchmark", "implementation", "median ms", "images/s",
                            "speed vs peer", "max rel err / note"]))
    if args.profile:
        profile_classifier(args)
    return rows


if __name__ == "__main__":
    main()
