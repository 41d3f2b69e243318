"""Loss and AP curves from detectron2's metrics.json (one JSON object per line)."""
import json

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path):
    """(loss points, AP points): [(iteration, total_loss)], [(iteration, AP, AP50)]."""
    losses, aps = [], []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "total_loss" in record:
                losses.append((record["iteration"], record["total_loss"]))
            if "bbox/AP" in record:
                aps.append((record["iteration"], record["bbox/AP"], record["bbox/AP50"]))
    return losses, aps


def plot_training_curves(metrics_path, out_path, title="training"):
    """Write a PNG with the total loss (left) and COCO box AP / AP50 (right)."""
    losses, aps = read_metrics(metrics_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if losses:
        left.plot(*zip(*losses), color="tab:blue")
    left.set(xlabel="iteration", ylabel="total loss", title=f"{title}: loss")
    if aps:
        iters, ap, ap50 = zip(*aps)
        right.plot(iters, ap, "o-", label="AP")
        right.plot(iters, ap50, "s-", label="AP50")
        right.legend()
    right.set(xlabel="iteration", ylabel="COCO box AP (%)", title=f"{title}: val AP", ylim=(0, 100))
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
