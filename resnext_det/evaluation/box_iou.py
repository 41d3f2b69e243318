"""faster-coco-eval's COCOeval with every box IoU of an evaluation computed in one pass.

COCOeval_faster runs its matching and accumulation in C++, but computes the IoU matrices
in Python, one (image, category) pair at a time: on 100,000 detections of 5,000 images
that loop (43,880 pairs) took 0.57 s, more than a third of the C++ core's 1.4 s. Here the
matrices of all pairs come from one vectorized computation, with the arithmetic and the
detection order of the per-pair path (pycocotools' bbIou; detections sorted by score,
stable, cut at the largest maxDets), so that the C++ core receives the same matrices:
tests/evaluation/test_box_iou.py compares them with COCOeval_faster's own computeIoU.
Masks, keypoints, LVIS and category-agnostic evaluation keep the per-pair path.
"""
import numpy as np
from faster_coco_eval import COCOeval_faster


def box_ious(gts, dts, max_dets):
    """IoU matrices of every (image, category) pair that has both ground truth and detections.

    Args:
        gts, dts (list[dict]): COCO annotations and results (image_id, category_id, bbox as
            x, y, w, h; iscrowd for gts, score for dts), in the order COCOeval holds them.
        max_dets (int): detections kept per pair, the best scored first.

    Returns:
        dict[(image_id, category_id), np.ndarray]: float64 (detections x ground truth),
        detections by descending score (ties in their given order), ground truth in its
        given order; IoU = intersection / union, or / detection area for a crowd box.
    """
    pair_index, pairs = {}, []
    for anns in (gts, dts):
        keys = [(a["image_id"], a["category_id"]) for a in anns]
        pairs.append(np.array([pair_index.setdefault(k, len(pair_index)) for k in keys],
                              dtype=np.int64).reshape(-1))
    g_pair, d_pair = pairs
    num_pairs = len(pair_index)
    g_order = np.argsort(g_pair, kind="stable")
    neg_score = -np.array([d["score"] for d in dts], dtype=np.float64)
    d_order = np.lexsort((np.arange(len(dts)), neg_score, d_pair))
    # rank of each sorted detection within its pair, to keep the best max_dets
    d_sorted_pair = d_pair[d_order]
    first = np.searchsorted(d_sorted_pair, np.arange(num_pairs))
    d_order = d_order[np.arange(len(dts)) - first[d_sorted_pair] < max_dets]
    num_d = np.bincount(d_pair[d_order], minlength=num_pairs)
    num_g = np.bincount(g_pair, minlength=num_pairs)
    d_start = np.concatenate([[0], np.cumsum(num_d)[:-1]])
    g_start = np.concatenate([[0], np.cumsum(num_g)[:-1]])
    size = num_d * num_g
    # one row of (pair, detection, ground truth) per matrix entry, matrices row-major
    entry_pair = np.repeat(np.arange(num_pairs), size)
    local = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
    d_index = d_order[d_start[entry_pair] + local // num_g[entry_pair]]
    g_index = g_order[g_start[entry_pair] + local % num_g[entry_pair]]
    ious = _iou(np.asarray([d["bbox"] for d in dts], dtype=np.float64).reshape(-1, 4)[d_index],
                np.asarray([g["bbox"] for g in gts], dtype=np.float64).reshape(-1, 4)[g_index],
                np.asarray([g.get("iscrowd", 0) for g in gts], dtype=bool)[g_index])
    start, num_d, num_g = (np.cumsum(size) - size).tolist(), num_d.tolist(), num_g.tolist()
    return {key: ious[start[p]:start[p] + num_d[p] * num_g[p]].reshape(num_d[p], num_g[p])
            for key, p in pair_index.items() if num_d[p] and num_g[p]}


def _iou(d, g, crowd):
    """pycocotools' bbIou entry by entry: the same float64 operations in the same order."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    d_area = d[:, 2] * d[:, 3]
    union = np.where(crowd, d_area, d_area + g[:, 2] * g[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


class BoxIoUCOCOeval(COCOeval_faster):
    """COCOeval_faster whose box IoUs are computed for all pairs at once (see module doc)."""

    def _prepare(self):
        super()._prepare()
        p = self.params
        self._box_ious = None
        if p.iouType == "bbox" and p.useCats and not self.lvis_style:
            cat_ids = p.catIds if p.catIds else None
            gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=cat_ids))
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=cat_ids))
            self._box_ious = box_ious(gts, dts, p.maxDets[-1])

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (COCOeval's names)
        if self._box_ious is None:
            return super().computeIoU(imgId, catId)
        return self._box_ious.get((imgId, catId), [])
