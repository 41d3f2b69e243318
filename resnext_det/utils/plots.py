"""Loss and evaluation curves from detectron2's metrics.json (one JSON object per line).

Detection and classification pretraining write the same format (detectron2's JSONWriter):
records with "iteration", "total_loss", ... and the evaluation's metrics under their
task: "bbox/AP", "bbox/AP50" (detection), "val/top1_err", "val/top5_err" (pretraining).
"""
import json

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

# (metric keys, y label, y limits) of the right-hand panel, the first one a file has
EVAL_PANELS = ((("bbox/AP", "bbox/AP50"), "COCO box AP (%)", (0, 100)),
               (("val/top1_err", "val/top5_err"), "top-k error (%)", (0, 100)))


def read_metrics(path):
    """The records of a metrics.json, in file order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def series(records, key):
    """[(iteration, value)] of the records that have `key`."""
    return [(r["iteration"], r[key]) for r in records if key in r]


def plot_training_curves(metrics_path, out_path, title="training"):
    """Write a PNG with the total loss (left) and the evaluation metrics (right)."""
    records = read_metrics(metrics_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    losses = series(records, "total_loss")
    if losses:
        left.plot(*zip(*losses), color="tab:blue")
    left.set(xlabel="iteration", ylabel="total loss", title=f"{title}: loss")
    keys, ylabel, ylim = next((p for p in EVAL_PANELS if series(records, p[0][0])), EVAL_PANELS[0])
    for key, style in zip(keys, ("o-", "s-")):
        points = series(records, key)
        if points:
            right.plot(*zip(*points), style, label=key.split("/")[1])
            right.legend()
    right.set(xlabel="iteration", ylabel=ylabel, title=f"{title}: val", ylim=ylim)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
