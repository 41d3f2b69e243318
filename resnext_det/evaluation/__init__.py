from .coco import METRICS_FILE, COCOMetricsEvaluator

__all__ = ["METRICS_FILE", "COCOMetricsEvaluator"]
