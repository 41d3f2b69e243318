"""Pictures of predictions and training curves."""
from .plots import plot_training_curves, read_metrics
from .visualize import draw_predictions

__all__ = ["draw_predictions", "plot_training_curves", "read_metrics"]
