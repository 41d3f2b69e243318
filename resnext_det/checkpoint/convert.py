"""Convert a weights file of any supported format into resnext_det's detectron2 .pkl.

Pipeline: read by content (readers) -> unwrap and detect the naming (detect) -> rename
to our classifier naming (sources/*) -> infer the template (template_infer) -> check
every key and shape against that template (validate) -> attach the metadata -> write
{"model": {key: ndarray}, "__author__": "resnext_det", "matching_heuristics": True,
"resnext_det": metadata}. detectron2's DetectionCheckpointer matches the bare names
(stem.*, res2.*, ...) by suffix, so one file loads into C4 (backbone.res2..4 and
roi_heads.res5), FPN and RetinaNet (backbone.bottom_up.*) models.
"""
import pickle
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..utils.io import atomic_write
from . import catalog
from .block_forms import convert_block_form
from .detect import detect_source, unwrap
from .errors import ConversionError, KeyMismatchError
from .metadata import WeightsMetadata, valid_pixel_stats
from .readers import WeightsFile, read_weights
from .sources import DROP
from .sources.base import as_tensor
from .template_infer import infer_template, infer_widths
from .validate import check_values, expected_shapes, key_problems, keep_matching

AUTHOR = "resnext_det"
METADATA_KEYS = ("input_format", "pixel_mean", "pixel_std", "stride_in_1x1", "norm")


@dataclass
class ConversionReport:
    """Every rename (source -> ours), every dropped key with its reason, every skip."""

    renames: List[Tuple[str, str]] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)

    def lines(self, verbose=False):
        """The report as text: a compact summary, or every rename when `verbose`."""
        out = [f"renamed {len(self.renames)} keys"]
        shown = self.renames if verbose else self.renames[:3] + self.renames[-2:]
        out += [f"  {src} -> {dst}" for src, dst in shown]
        if not verbose and len(self.renames) > 5:
            out.insert(4, f"  ... ({len(self.renames) - 5} more; --verbose lists all)")
        by_reason = {}
        for src, why in self.dropped:
            by_reason.setdefault(why, []).append(src)
        for why, keys in by_reason.items():
            shown = keys if verbose or len(keys) <= 4 else keys[:3] + [f"... ({len(keys) - 3} more)"]
            out.append(f"dropped {len(keys)} ({why}): {', '.join(shown)}")
        out += [f"SKIPPED {problem}" for problem in self.skipped]
        return out


@dataclass
class ConversionResult:
    state_dict: Dict[str, torch.Tensor]
    metadata: WeightsMetadata
    report: ConversionReport


def _rename(source, state, report, path):
    """Our-named tensors (each real and finite: validate.check_values), plus the problems of
    unknown or clashing source keys."""
    out, problems = {}, []
    for key, new in source.rename(state).items():
        if new == DROP:
            why = getattr(new, "reason", f"no weight of ours, by a {source.name} rule")
            report.dropped.append((key, why))
        elif new is None:
            problems.append(f"unmatched source key {key!r} (shape {tuple(np.shape(state[key]))}):"
                            f" no rule of the {source.name} naming")
        elif new in out:
            problems.append(f"two source keys map to {new!r}; the second is {key!r}")
        else:
            check_values({key: state[key]}, path)
            value = as_tensor(state[key])
            out[new] = value.float() if value.is_floating_point() else value
            report.renames.append((key, new))
    return out, problems


def _drop_fc(state, keep_fc, report):
    if keep_fc:
        return state
    for key in [k for k in state if k.startswith("linear.")]:
        state.pop(key)
        report.dropped.append((key, "classifier layer, dropped for detection (keep_fc keeps it)"))
    return state


def _metadata(source, wrapper, template, state, block_form, overrides, preset, variant=None):
    extra = {"preset": preset} if preset else {}
    if variant is not None:  # the layout within the format (Source.variant), e.g. Caffe2's
        extra["variant"] = variant
    if preset and source.name != "caffe2":
        raise ConversionError(f"a Caffe2 preset was given but the file is {source.name}")
    values = source.defaults(wrapper, template, **extra)
    unknown = set(overrides or {}) - set(METADATA_KEYS)
    if unknown:
        raise ConversionError(f"unknown metadata overrides {sorted(unknown)}; known: {METADATA_KEYS}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    _check_pixels(values.get("pixel_mean"), values.get("pixel_std"))
    linear = state.get("linear.weight")
    return WeightsMetadata(template=template.name, source_format=source.name, block_form=block_form,
                           num_classes=None if linear is None else int(linear.shape[0]), **values)


def _check_pixels(mean, std):
    """3 finite means and 3 finite stds > 0 (the model divides by the std)."""
    for key, values, positive in (("pixel_mean", mean, False), ("pixel_std", std, True)):
        if values is not None and not valid_pixel_stats(values, 3, positive):
            raise ConversionError(f"{key} {list(values)} is not valid: expected 3 finite numbers"
                                  f"{' > 0' if positive else ''} (0-255 scale, one per channel)")


def _check_fits(source, problems, state, weights):
    """Source keys that no rule of the detected format knows: one error, before the template.

    Reading a template off keys of another layout gives misleading errors (no block found
    in any stage), so the layout the file was taken for is named with the first misfits.
    """
    unknown = [p for p in problems if p.startswith("unmatched source key")]
    if not unknown:
        return
    raise KeyMismatchError(unknown[:8], header=(
        f"{weights.path}: read as {source.name} weights ({weights.container} container), but "
        f"{len(unknown)} of its {len(state)} keys do not fit that layout ({source.layout}); "
        f"the first ones"))


def _catalog(weights, source, template, variant, overrides, caffe2_preset):
    """(catalog entry, metadata overrides): a file under a published name must be that file.

    Its sha256 prefix (where the name has one), format and template are checked against
    the catalog, whose input format, pixel statistics and stride then apply; values the
    user gave (overrides, an explicit Caffe2 preset) win.
    """
    entry = catalog.lookup(weights.path, source.name, variant)
    if entry is None:
        return None, overrides
    catalog.verify(entry, weights.path, weights.sha256, source.name, template.name, variant)
    if caffe2_preset is not None:
        return entry, overrides
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return entry, {**catalog.metadata(entry), **given}


def convert_weights(path, *, keep_fc=False, allow_partial=False, block_form="c", overrides=None,
                    caffe2_preset=None, trust_pickle=False):
    """Read `path` (any supported format) and return our weights with their metadata.

    Args:
        path (str or WeightsFile): the file, or a WeightsFile already read (readers.py).
        keep_fc (bool): keep the classifier (`linear.*`); dropped by default for detection.
        allow_partial (bool): skip unmatched / missing / mis-shaped keys (listed in the
            report) instead of raising KeyMismatchError.
        block_form (str): "a", "b" or "c": the block form of the written keys.
        overrides (dict): metadata values that win over the source's defaults, among
            input_format, pixel_mean, pixel_std, stride_in_1x1, norm.
        caffe2_preset (str): "msra" or "fair" for Caffe2 pickles (see sources/caffe2.py).
        trust_pickle (bool): unpickle in full (runs code the file carries); see readers.py.
    Returns:
        ConversionResult: form-`block_form` state dict in our classifier naming, its
        WeightsMetadata and the ConversionReport (every rename, drop and skip).
    """
    weights = path if isinstance(path, WeightsFile) else read_weights(path, trust_pickle=trust_pickle)
    state, wrapper = unwrap(weights.obj, weights.container, weights.path)
    source = detect_source(state, wrapper, weights.path)
    report = ConversionReport()
    ours, problems = _rename(source, state, report, weights.path)
    if not allow_partial:
        _check_fits(source, problems, state, weights)
    ours = source.finish(ours)
    template = infer_template(ours)
    variant = source.variant(state, wrapper)
    entry, overrides = _catalog(weights, source, template, variant, overrides, caffe2_preset)
    ours = _drop_fc(ours, keep_fc, report)
    num_classes = ours["linear.weight"].shape[0] if "linear.weight" in ours else None
    expected = expected_shapes(template, num_classes if keep_fc else None, **infer_widths(ours))
    problems += key_problems(ours, expected)
    ours = keep_matching(ours, expected, problems, allow_partial)
    report.skipped.extend(problems)
    meta = _metadata(source, wrapper, template, ours, block_form, overrides, caffe2_preset, variant)
    if entry is not None:
        meta.notes += f"; catalog: {entry.name}"
    return ConversionResult(convert_block_form(ours, block_form), meta, report)


def detectron2_weights(state_dict, metadata):
    """The .pkl dict: numpy weights (no num_batches_tracked), author, heuristics flag, metadata."""
    model = {k: v.detach().cpu().numpy() for k, v in state_dict.items()
             if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": AUTHOR, "matching_heuristics": True, AUTHOR: metadata}


def detectron2_checkpoint(result):
    """The dict written to disk for a ConversionResult."""
    return detectron2_weights(result.state_dict, result.metadata.to_dict())


def save_converted(result, out_path):
    """Write `result` as a detectron2-loadable .pkl (atomically: never half a file)."""
    data = detectron2_checkpoint(result)
    return atomic_write(out_path, lambda f: pickle.dump(data, f))
