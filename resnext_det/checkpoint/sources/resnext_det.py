"""Our own naming: classifier checkpoints and detectron2 checkpoints of our models.

  classifier      stem.*, res2.* .. res5.*, linear.*
  C4 detector     backbone.stem.*, backbone.res2.* .. res4.*, roi_heads.res5.*
  FPN/RetinaNet   backbone.bottom_up.stem.*, backbone.bottom_up.res2.* .. res5.*
The detector prefixes are removed; the detector's own layers (FPN, RPN, heads) are
dropped, since a converted file holds the ResNeXt only; so are the offset predictors of
deformable blocks (`conv2_offset`: modeling/deform.py, detectron2's DeformBottleneckBlock),
trained with the detector: the file is the plain ResNeXt, which a deformable model loads
with its offsets at their zero start, as from ImageNet weights (learned offsets are kept
by loading the detector's checkpoint itself, unconverted). Forms (a)/(b) are regrouped
into form (c). A file converted earlier carries its metadata under "resnext_det"; files
without it (detectron2's own R-50.pkl, say) have unknown stride/pixel conventions, but for
the input a train_net.py checkpoint stores ("input": INPUT.FORMAT, MODEL.PIXEL_MEAN / STD).
"""
import re

from ..block_forms import to_grouped
from .base import DROP, Dropped, Source, rename_each

_OURS = re.compile(r"^(stem|res[2-5])\.|^linear\.(weight|bias)$")
_PREFIXES = ("module.", "backbone.bottom_up.", "backbone.", "roi_heads.")
OFFSET_KEY = re.compile(r"\.conv2_offset\.(weight|bias)$")  # a deformable block's offsets
OFFSETS = Dropped("offset predictor of a deformable 3x3, trained with the detector; the plain "
                  "ResNeXt has none, a deformable model starts it at zero")


def _strip(key):
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def rename_key(key):
    """Our key under any detector prefix -> ours; other detector layers DROP."""
    if key.endswith("num_batches_tracked"):
        return DROP
    stripped = _strip(key)
    if OFFSET_KEY.search(stripped):
        return OFFSETS
    if _OURS.match(stripped):
        return stripped
    return DROP if stripped != key or key.startswith("proposal_generator.") else None


def matches(state, wrapper):
    return any(_strip(key).startswith("stem.conv1.") for key in state)


def defaults(wrapper, template):
    meta = wrapper.get("resnext_det") if isinstance(wrapper, dict) else None
    if meta:
        keys = ("input_format", "pixel_mean", "pixel_std", "stride_in_1x1", "norm")
        return dict({k: meta[k] for k in keys if k in meta},
                    notes=f"metadata of an earlier conversion from {meta.get('source_format')}")
    trained = wrapper.get("input") if isinstance(wrapper, dict) else None
    if isinstance(trained, dict):  # a train_net.py checkpoint: the input it was trained on
        return dict(input_format=trained.get("INPUT.FORMAT"),
                    pixel_mean=trained.get("MODEL.PIXEL_MEAN"),
                    pixel_std=trained.get("MODEL.PIXEL_STD"), stride_in_1x1=None, norm=None,
                    notes="input of the training that wrote the checkpoint; stride and norm "
                          "unknown")
    return dict(input_format=None, pixel_mean=None, pixel_std=None, stride_in_1x1=None,
                norm=None, notes="our naming without metadata: conventions unknown")


SOURCE = Source("resnext_det", matches, rename_each(rename_key), to_grouped, defaults,
                layout="[backbone.[bottom_up.]|roi_heads.]stem.conv1, res{2-5}.{j}.conv{1-3}[.norm] "
                       "/ shortcut[.norm], linear; detector heads dropped")
