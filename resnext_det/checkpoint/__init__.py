"""Checkpoint conversion."""
from .block_forms import convert_block_form, from_grouped, to_grouped

__all__ = ["convert_block_form", "from_grouped", "to_grouped"]
