"""COCO box AP by pycocotools, printed as a table and written as JSON.

detectron2's COCOEvaluator already runs pycocotools' COCOeval (its C++ "fast" COCOeval
needs detectron2's compiled _C and falls back to pycocotools without it) and logs AP,
AP50, AP75, APs/m/l and per-category AP. We add the JSON file a run is judged by.
"""
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..utils.io import atomic_write

METRICS_FILE = "coco_metrics.json"


class COCOMetricsEvaluator(COCOEvaluator):
    """COCOEvaluator that also writes `<output_dir>/coco_metrics.json`.

    The file holds {"dataset": name, "bbox": {"AP": .., "AP50": .., ..., "AP-<class>": ..}},
    numbers in percent, next to detectron2's `coco_instances_results.json` (the detections).
    """

    def __init__(self, dataset_name, output_dir, **kwargs):
        super().__init__(dataset_name, output_dir=output_dir, **kwargs)
        self._dataset_name = dataset_name

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids)
        if comm.is_main_process() and self._output_dir and results:
            path = os.path.join(self._output_dir, METRICS_FILE)
            text = json.dumps({"dataset": self._dataset_name, **results}, indent=2)
            atomic_write(path, lambda f: f.write(text.encode()))
            self._logger.info(f"COCO metrics written to {path}")
        return results
