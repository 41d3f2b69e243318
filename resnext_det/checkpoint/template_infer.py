"""Read the Template (depth, C, d) off the shapes of weights in our naming.

Blocks per stage give the depth (templates.STAGE_BLOCKS); res2.0.conv2.weight, the
grouped 3x3 of form (c), has shape [C*d, d, 3, 3], which gives d and C.
"""
import re

from ..modeling.templates import STAGE_BLOCKS, Template
from .errors import ConversionError

_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.conv1\.weight$")


def stage_blocks(state):
    """(blocks in res2, res3, res4, res5) found in a state dict."""
    counts = {s: 0 for s in range(2, 6)}
    for key in state:
        if m := _BLOCK.match(key):
            counts[int(m[1])] = max(counts[int(m[1])], int(m[2]) + 1)
    return tuple(counts[s] for s in range(2, 6))


def infer_widths(state):
    """{"stem_out_channels", "res2_out_channels"} off stem.conv1 and res2.0.conv3 (64 and
    256 in the paper; the later stages double them), the paper's where a key is missing."""
    stem, res2 = state.get("stem.conv1.weight"), state.get("res2.0.conv3.weight")
    return {"stem_out_channels": stem.shape[0] if stem is not None and stem.dim() == 4 else 64,
            "res2_out_channels": res2.shape[0] if res2 is not None and res2.dim() == 4 else 256}


def infer_template(state):
    """The Template of form-(c) weights in our naming; ConversionError if none fits."""
    blocks = stage_blocks(state)
    depths = [d for d, b in STAGE_BLOCKS.items() if b == blocks]
    if not depths:
        raise ConversionError(f"blocks per stage res2..res5 = {blocks} match no depth of "
                              f"{ {d: b for d, b in STAGE_BLOCKS.items()} }")
    conv2 = state.get("res2.0.conv2.weight")
    if conv2 is None or conv2.dim() != 4:
        raise ConversionError("res2.0.conv2.weight (the grouped 3x3) is missing: cannot read C, d")
    width, per_group = conv2.shape[0], conv2.shape[1]
    return Template(depths[0], width // per_group, per_group)
