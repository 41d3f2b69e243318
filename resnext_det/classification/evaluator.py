"""Top-1 and top-5 error (the paper's metrics) as a detectron2 DatasetEvaluator."""
import logging

import torch
import torch.nn.functional as F
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.checks import DatasetError
from ..data.classification import IGNORED_LABEL

logger = logging.getLogger(__name__)


def topk_correct(logits, labels, ks=(1, 5)):
    """[number of rows whose label is among the k highest logits, for each k]."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


class TopKEvaluator(DatasetEvaluator):
    """Mean loss, top-1 and top-5 error (percent) over the images of every process.

    Inputs are (images, labels) batches, outputs the logits. Rows labelled IGNORED_LABEL
    (validation images skipped by DATA.ON_BAD_IMAGE) count nowhere; "skipped" says how
    many. With fewer than five classes, top-5 counts every class (error 0).
    """

    def reset(self):
        # loss, top-1 hits, top-5 hits, images, skipped images
        self._sums = torch.zeros(5, dtype=torch.float64)

    def process(self, inputs, outputs):
        labels = inputs[1].to(outputs.device)
        kept = labels != IGNORED_LABEL
        outputs, labels = outputs[kept], labels[kept]
        loss = F.cross_entropy(outputs.float(), labels, reduction="sum") if len(labels) else 0.0
        self._sums += torch.tensor([float(loss), *topk_correct(outputs, labels), len(labels),
                                    int((~kept).sum())], dtype=torch.float64)

    def evaluate(self):
        """{"top1_err", "top5_err", "loss", "images", "skipped"}, on every process."""
        loss, top1, top5, count, skipped = sum(comm.all_gather(self._sums)).tolist()
        if not count:  # the errors would read 100%, as if the model were wrong on everything
            raise DatasetError(f"no validation image could be read ({int(skipped)} left out as "
                               "bad, each named in the log above); the errors would mean "
                               "nothing. Fix or replace the validation images (DATA.ROOT).")
        result = {"top1_err": 100 * (1 - top1 / count), "top5_err": 100 * (1 - top5 / count),
                  "loss": loss / count, "images": int(count), "skipped": int(skipped)}
        left_out = f", {result['skipped']} bad images left out" if skipped else ""
        logger.info(f"top-1 error {result['top1_err']:.2f}%, top-5 error {result['top5_err']:.2f}% "
                    f"(loss {result['loss']:.4f}) on {result['images']} images{left_out}")
        return result
