"""Time (and profile) the demo's training iteration: tools/demo.py's trainer, its steps alone.

    DETECTRON2_DATASETS=/tmp/d2data .venv/bin/python benchmarks/demo_step.py --iters 30
    ... benchmarks/demo_step.py --profile 10            # torch.profiler table of 10 steps
    ... benchmarks/demo_step.py --variant before=MODEL.RESNEXT.ROI_ALIGN,torchvision \
                                --variant after=MODEL.RESNEXT.ROI_ALIGN,sparse

Each --variant NAME=KEY,VALUE,KEY,VALUE builds the demo's Trainer with those config
overrides (same seed, so the same weights and images); "threads:N" among them runs its
steps with N torch threads. The variants' steps are then interleaved (a, b, a, b, ...) so
that a slow spell of a shared machine slows them alike.
Reports the median and mean seconds per step of each (the data loader's wait included,
as in the demo's log) and the mean time spent waiting for data.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from demo import DATASET, DEMO_CONFIG, demo_args  # noqa: E402

from resnext_det.data import digits_root, ensure_digits_dataset  # noqa: E402
from resnext_det.engine import setup_cfg  # noqa: E402
from resnext_det.engine.trainer import Trainer  # noqa: E402


def build_trainer(opts, out_dir):
    """The demo's Trainer with config `opts` ("threads:N" among them: its steps' threads)."""
    threads = [int(o.split(":")[1]) for o in opts if o.startswith("threads:")]
    opts = [o for o in opts if not o.startswith("threads:")]
    cfg = setup_cfg(demo_args(DEMO_CONFIG, list(opts) + ["OUTPUT_DIR", out_dir]), task="train")
    trainer = Trainer(cfg)  # its build_model applies MODEL.RESNEXT.ROI_ALIGN
    trainer.threads = threads[0] if threads else torch.get_num_threads()
    trainer.resume_or_load(resume=False)
    trainer._trainer.iter = 0
    return trainer


class TimedStep:
    """One variant's trainer; step() runs one iteration and records its time."""

    def __init__(self, trainer):
        self.trainer, self.times, self.data_times = trainer, [], []
        self.storage = None

    def step(self):
        from detectron2.utils.events import EventStorage
        with EventStorage(len(self.times)) as storage:
            self.trainer._trainer.storage = storage
            torch.set_num_threads(self.trainer.threads)
            start = time.perf_counter()
            self.trainer._trainer.run_step()
            self.times.append(time.perf_counter() - start)
            self.data_times.append(storage.history("data_time").latest())


def parse_variant(text):
    name, _, rest = text.partition("=")
    return name, [x for x in rest.split(",") if x]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--profile", type=int, default=0,
                        help="profile N steps of the first variant")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_digits_dataset(digits_root(), **DATASET)
    variants = dict(parse_variant(v) for v in args.variant) or {"demo": []}
    steps = {}
    for name, opts in variants.items():
        steps[name] = TimedStep(build_trainer(opts, tempfile.mkdtemp(prefix=f"demo_step_{name}_")))
    print(f"threads {torch.get_num_threads()}, variants {variants}", flush=True)
    for _ in range(args.warmup):
        for s in steps.values():
            s.step()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        first = next(iter(steps.values()))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile):
                first.step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))
        return
    for s in steps.values():
        s.times, s.data_times = [], []
    for _ in range(args.iters):
        for s in steps.values():
            s.step()
    base = None
    for name, s in steps.items():
        med = statistics.median(s.times)
        base = base or med
        print(f"RESULT {name}: median {med:.4f} s/step, mean {statistics.mean(s.times):.4f}, "
              f"data wait {statistics.mean(s.data_times):.4f}, speed vs first {base / med:.2f}x")


if __name__ == "__main__":
    main()
