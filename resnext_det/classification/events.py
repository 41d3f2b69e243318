"""Progress (ETA, images/s) on the log, and metrics as JSON lines and TensorBoard events.

<OUTPUT_DIR>/metrics.json gets one JSON object per line: {"kind": "iter", ...} every
LOG_PERIOD iterations and {"kind": "epoch", ...} at the end of each epoch; TensorBoard
events go to <OUTPUT_DIR>/tensorboard under the same names. Only the main process writes.
"""
import datetime
import json
import logging
import os
import time

logger = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


def format_eta(seconds):
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Throughput:
    """Seconds per iteration and images per second over the iterations since the last read."""

    def __init__(self, images_per_iter):
        self.images_per_iter = images_per_iter
        self.reset()

    def reset(self):
        self.start, self.iters = time.perf_counter(), 0

    def step(self):
        self.iters += 1

    def read(self):
        """(seconds per iteration, images per second), then restart the window."""
        elapsed = time.perf_counter() - self.start
        per_iter = elapsed / max(self.iters, 1)
        self.reset()
        return per_iter, self.images_per_iter / max(per_iter, 1e-12)


class MetricsWriter:
    """Appends JSON lines and writes TensorBoard scalars; a no-op off the main process."""

    def __init__(self, output_dir, enabled=True):
        self.enabled, self.tensorboard = enabled, None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.json_path = os.path.join(output_dir, METRICS_FILE)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(os.path.join(output_dir, "tensorboard"))
        except ImportError:  # tensorboard is optional; JSON lines are always written
            logger.warning("tensorboard is not installed: no TensorBoard events are written")

    def write(self, kind, iteration, scalars):
        if not self.enabled:
            return
        record = {"kind": kind, "iteration": iteration, **scalars}
        with open(self.json_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for name, value in scalars.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{kind}/{name}", value, iteration)
            self.tensorboard.flush()

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()


def read_metrics(output_dir, kind=None):
    """The records of <output_dir>/metrics.json, optionally those of one kind."""
    with open(os.path.join(output_dir, METRICS_FILE)) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if kind is None or r["kind"] == kind]
