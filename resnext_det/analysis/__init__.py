"""Model analysis against the paper's figures."""
from .complexity import PAPER_FIGURES, PaperFigure, complexity_table, count_complexity

__all__ = ["PAPER_FIGURES", "PaperFigure", "complexity_table", "count_complexity"]
