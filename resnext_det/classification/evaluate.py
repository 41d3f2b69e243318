"""Top-1 and top-5 error (the paper's metrics), over all processes."""
import torch
import torch.nn.functional as F
from detectron2.utils import comm


def topk_correct(logits, labels, ks=(1, 5)):
    """[number of rows whose label is among the k highest logits, for each k]."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, :min(k, k_max)].any(dim=1).sum()) for k in ks]


def all_sum(values, device):
    """Element-wise sum of a list of numbers over all processes."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def error_rates(loss_sum, top1, top5, count):
    """Mean loss and top-1/top-5 error in percent from summed counts."""
    count = max(count, 1)
    return {"loss": loss_sum / count, "top1_err": 100.0 * (1 - top1 / count),
            "top5_err": 100.0 * (1 - top5 / count)}


@torch.no_grad()
def evaluate(model, loader, device):
    """{"loss", "top1_err", "top5_err" (percent), "images"} of `model` on `loader`.

    Each process evaluates its shard; the sums are all-reduced. With fewer than five
    classes, top-5 counts every class (error 0).
    """
    was_training = model.training
    model.eval()
    sums = [0.0, 0, 0, 0]
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(images)
        top1, top5 = topk_correct(logits, labels)
        sums = [sums[0] + float(F.cross_entropy(logits, labels, reduction="sum")),
                sums[1] + top1, sums[2] + top5, sums[3] + len(labels)]
    model.train(was_training)
    loss_sum, top1, top5, count = all_sum(sums, device)
    return dict(error_rates(loss_sum, top1, top5, count), images=int(count))
