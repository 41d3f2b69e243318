"""ROIAlign on CPUs as one sparse matrix product over all FPN levels.

ROIAlign (He et al. 2017) is linear in the features: every output bin is a weighted sum
of feature pixels (bilinear taps of its sampling points, averaged). So for all regions
and all levels at once, out = A @ F, where F is the levels' features as rows of channels
(NHWC, levels stacked) and A a sparse matrix of the taps' weights; its gradient is
A^T @ grad, a second sparse product. torchvision's CPU kernel computes the same sums, but
its backward recomputes the taps for every channel and scatters one float at a time
(~85 ms per FPN level in the digits demo's step: 21% of it, more than its convolutions'
backward), and detectron2's ROIPooler adds an index_put per level and its backward.

The taps follow torchvision's CPU kernel (csrc/ops/cpu/roi_align_common.h) exactly:
sample (iy, ix) of bin (p, q) sits at start + p * bin + (iy + 0.5) * bin / grid in the
ROI's float coordinates (start = box * scale - 0.5 with aligned=True); the grid is
sampling_ratio, or ceil(roi_size / output_size) per ROI when it is 0 (detectron2's
POOLER_SAMPLING_RATIO 0); a sample with y < -1 or y > height (x likewise) contributes 0;
y <= 0 is read at 0 and y >= height - 1 at height - 1. Equal to torchvision.ops.roi_align
in values and gradients up to float rounding (tests/modeling/test_roi_align.py).
"""
import contextlib

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)

try:  # fx.symbolic_trace's flag, without the deprecation warning is_fx_tracing logs
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing
except ImportError:  # a torch before is_fx_symbolic_tracing: is_fx_tracing does not warn there
    from torch.fx._symbolic_trace import is_fx_tracing as is_fx_symbolic_tracing

ROI_ALIGN_IMPLS = ("torchvision", "sparse")


def _segments(counts):
    """For segments of `counts` items laid end to end: (segment of each item, its index
    inside its segment), both int64 of length counts.sum()."""
    segment = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    first = torch.cumsum(counts, 0) - counts
    return segment, torch.arange(segment.numel()) - first[segment]


def _axis_windows(start, bin_size, grid, pooled, size):
    """Each bin's bilinear weights along one axis (y or x), its taps summed per pixel.

    ROI r has `pooled` bins of grid[r] samples each along this axis; sample i of bin p sits
    at start[r] + p * bin_size[r] + (i + 0.5) * bin_size[r] / grid[r] (float ops in the
    order of torchvision's kernel) on an axis of size[r] pixels. A sample outside
    [-1, size] weighs 0; below 0 it is read at 0, from size - 1 on at size - 1.

    Returns:
        (first, weights, span): (R, pooled) int64, the first pixel of each bin's window;
        (R, pooled, L) its weights on pixels first .. first + L - 1 (L the longest window);
        (R,) int64, the window length each ROI needs (0 for a ROI without samples).
    """
    num_rois, dtype = start.numel(), start.dtype
    roi, k = _segments(pooled * grid)
    g = grid[roi]
    p, i = k // g, k % g
    bin_r = bin_size[roi]
    coord = start[roi] + p.to(dtype) * bin_r + (i.to(dtype) + 0.5) * bin_r / g.to(dtype)
    size = size[roi]
    inside = (coord >= -1) & (coord <= size.to(dtype))  # False for NaN, as torchvision
    coord = torch.where(inside, coord.clamp(min=0), torch.zeros_like(coord))
    low = coord.long()  # truncation: coord >= 0
    at_end = low >= size - 1
    low = torch.where(at_end, size - 1, low)
    frac = torch.where(at_end, torch.zeros_like(coord), coord - low.to(dtype))
    high = torch.where(at_end, low, low + 1)
    # Each bin's window starts at its first inside sample's low pixel (samples ascend).
    bin_id = roi * pooled + p
    big = torch.iinfo(torch.int64).max
    first = torch.full((num_rois * pooled,), big, dtype=torch.int64)
    first.scatter_reduce_(0, bin_id, torch.where(inside, low, big), "amin")
    first = torch.where(first == big, 0, first)
    offset = torch.stack([low, high], 1) - first[bin_id].unsqueeze(1)
    span = torch.zeros(num_rois, dtype=torch.int64)
    span.scatter_reduce_(0, roi, torch.where(inside, offset[:, 1] + 1, 0), "amax")
    weights = torch.zeros(num_rois * pooled, int(span.max()) if num_rois else 0, dtype=dtype)
    tap_weights = torch.stack([1.0 - frac, frac], 1) * inside.unsqueeze(1)
    keep = inside.unsqueeze(1).expand(-1, 2)
    weights.index_put_((bin_id.unsqueeze(1).expand(-1, 2)[keep], offset[keep]),
                       tap_weights[keep], accumulate=True)
    return first.view(num_rois, pooled), weights.view(num_rois, pooled, weights.shape[1]), span


def roi_align_matrix(rois, levels, shapes, scales, output_size, sampling_ratio, aligned):
    """The sparse matrix A with roi_align(features, rois) = A @ stacked NHWC features.

    Args:
        rois (Tensor): (R, 5) float: batch index, x0, y0, x1, y1 in image coordinates.
        levels (Tensor): (R,) int64, the level each ROI is pooled from.
        shapes (list[tuple]): (N, H, W) of each level's features.
        scales (list[float]): each level's spatial scale (1 / stride).
        output_size (tuple): (P, Q) bins.
        sampling_ratio (int): samples per bin along each axis; <= 0: ceil(roi size / bins).
        aligned (bool): shift the box by -0.5 pixel (detectron2's ROIAlignV2).

    Returns:
        (indices, values): (2, E) int64 rows (R * P * Q, ROI-major) and columns (pixels
        of the stacked levels, level-major, NHW order), and (E,) weights; a bin's entries
        are the product of its y and x windows (zeros included).
    """
    (P, Q), dtype = output_size, rois.dtype
    sizes = torch.tensor([[h, w, n * h * w] for n, h, w in shapes], dtype=torch.int64)
    offsets = (torch.cumsum(sizes[:, 2], 0) - sizes[:, 2])[levels]
    height, width = sizes[levels, 0], sizes[levels, 1]
    scale = torch.tensor(scales, dtype=dtype)[levels]
    shift = 0.5 if aligned else 0.0
    start_x, start_y = rois[:, 1] * scale - shift, rois[:, 2] * scale - shift
    roi_w, roi_h = rois[:, 3] * scale - shift - start_x, rois[:, 4] * scale - shift - start_y
    if not aligned:  # torchvision: "Force malformed ROIs to be 1x1"
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    grid_h, grid_w = _grid(roi_h, P, sampling_ratio), _grid(roi_w, Q, sampling_ratio)
    count = (grid_h * grid_w).clamp(min=1).to(dtype)
    y0, wy, span_y = _axis_windows(start_y, roi_h / P, grid_h, P, height)
    x0, wx, span_x = _axis_windows(start_x, roi_w / Q, grid_w, Q, width)
    image_row = (rois[:, 0].long() * height).view(-1, 1, 1)  # first row of each ROI's image
    indices, values = [], []
    keys = span_y * (int(span_x.max()) + 1 if span_x.numel() else 1) + span_x
    for key in torch.unique(keys).tolist():  # ROIs with equal window lengths, together
        sel = torch.nonzero(keys == key).squeeze(1)
        ly, lx = int(span_y[sel[0]]), int(span_x[sel[0]])
        if ly == 0 or lx == 0:
            continue  # no sample inside: the bins are 0
        h, w = height[sel].view(-1, 1, 1), width[sel].view(-1, 1, 1)
        row_pix = torch.minimum(y0[sel].unsqueeze(2) + torch.arange(ly), h - 1)  # (Rg, P, ly)
        row_pix = (row_pix + image_row[sel]) * w + offsets[sel].view(-1, 1, 1)
        col_pix = torch.minimum(x0[sel].unsqueeze(2) + torch.arange(lx), w - 1)  # (Rg, Q, lx)
        cols = row_pix[:, :, None, :, None] + col_pix[:, None, :, None, :]
        y_weights = wy[sel, :, :ly] / count[sel].view(-1, 1, 1)  # the mean over samples
        vals = y_weights[:, :, None, :, None] * wx[sel, :, None, :lx][:, None]
        rows = ((sel.view(-1, 1, 1) * P + torch.arange(P).view(-1, 1)) * Q + torch.arange(Q))
        indices.append(torch.stack([rows[:, :, :, None, None].expand_as(cols).reshape(-1),
                                    cols.reshape(-1)]))
        values.append(vals.reshape(-1))
    if not values:
        return torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0, dtype=dtype)
    return torch.cat(indices, 1), torch.cat(values)


def _grid(roi_size, bins, sampling_ratio):
    """Samples per bin along an axis, per ROI: sampling_ratio, or ceil(roi_size / bins)
    (torchvision's float ceil; an empty or inverted ROI gets 0 samples, hence zeros)."""
    if sampling_ratio > 0:
        return torch.full(roi_size.shape, int(sampling_ratio), dtype=torch.int64)
    grid = torch.ceil(roi_size / bins)
    return torch.nan_to_num(grid, nan=0.0, posinf=0.0).clamp(min=0).long()


class _SparseProduct(torch.autograd.Function):
    """A @ features, with A^T @ grad as the features' gradient (A has no gradient)."""

    @staticmethod
    def forward(ctx, indices, values, num_rows, features):
        size = (num_rows, features.shape[0])
        ctx.save_for_backward(indices, values)
        ctx.size = size
        return torch.mm(torch.sparse_coo_tensor(indices, values, size, check_invariants=False),
                        features)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        indices, values = ctx.saved_tensors
        matrix_t = torch.sparse_coo_tensor(indices.flip(0), values, ctx.size[::-1],
                                           check_invariants=False)
        return None, None, None, torch.mm(matrix_t, grad.contiguous())


def multilevel_roi_align(features, rois, levels, scales, output_size, sampling_ratio, aligned):
    """ROIAlign of each ROI from the level `levels` names, all levels in one sparse product.

    Args:
        features (list[Tensor]): (N, C, H_l, W_l) per level, one dtype, CPU.
        rois (Tensor): (R, 5): batch index, x0, y0, x1, y1 (image coordinates).
        levels (Tensor): (R,) int64 level of each ROI.
        scales, output_size, sampling_ratio, aligned: as roi_align_matrix.

    Returns:
        Tensor: (R, C, P, Q), contiguous; equal to torchvision.ops.roi_align of each ROI on
        its level. Types other than float32 / float64 are computed in float32 (as
        torchvision's autocast rule does, also under autocast) and returned in the
        features' type.
    """
    dtype = features[0].dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    channels, (P, Q) = features[0].shape[1], output_size
    stacked = torch.cat([f.to(compute).permute(0, 2, 3, 1).reshape(-1, channels) for f in features])
    with torch.no_grad():
        indices, values = roi_align_matrix(rois.detach().to(compute), levels,
                                           [(f.shape[0], f.shape[2], f.shape[3]) for f in features],
                                           scales, output_size, sampling_ratio, aligned)
    with torch.autocast("cpu", enabled=False):  # autocast would run torch.mm in bfloat16
        out = _SparseProduct.apply(indices, values, rois.shape[0] * P * Q, stacked)
    return out.view(-1, P, Q, channels).permute(0, 3, 1, 2).contiguous().to(dtype)


def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align's signature (rois a (K, 5) Tensor), computed as one sparse
    product (multilevel_roi_align with one level)."""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    levels = torch.zeros(rois.shape[0], dtype=torch.int64)
    return multilevel_roi_align([input], rois, levels, [spatial_scale], tuple(output_size),
                                sampling_ratio, aligned)


class SparseROIPooler(ROIPooler):
    """detectron2's ROIPooler whose ROIAlign levels run as one sparse product on the CPU.

    Same construction, state (none) and outputs as ROIPooler (levels assigned by its
    assign_boxes_to_levels); used where every level pooler is detectron2's ROIAlign
    (POOLER_TYPE "ROIAlign" or "ROIAlignV2") and the features are on the CPU. Otherwise,
    and while tracing or scripting, it is ROIPooler.

    With float16 / bfloat16 features the outputs differ: detectron2's ROIAlign casts the
    boxes to the features' dtype (a corner at 512-1024 px moves by up to 2 px in bfloat16,
    0.25 px in float16), this one keeps them in float32 (the engine runs every pooler so:
    float32_roi_pooling).
    """

    def forward(self, x, box_lists):
        if not self._sparse_applies(x, box_lists):
            return super().forward(x, box_lists)
        rois = convert_boxes_to_pooler_format(box_lists)
        if len(self.level_poolers) == 1:
            levels = torch.zeros(rois.shape[0], dtype=torch.int64)
        else:
            levels = assign_boxes_to_levels(box_lists, self.min_level, self.max_level,
                                            self.canonical_box_size, self.canonical_level)
        first = self.level_poolers[0]
        return multilevel_roi_align(x, rois, levels, [p.spatial_scale for p in self.level_poolers],
                                    tuple(self.output_size), first.sampling_ratio, first.aligned)

    def _sparse_applies(self, x, box_lists):
        poolers = list(self.level_poolers)
        return (not torch.jit.is_scripting() and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling() and not is_fx_symbolic_tracing()
                and isinstance(x, list) and len(x) == len(poolers) and len(box_lists) > 0
                and all(type(p) is ROIAlign for p in poolers)
                and len({(p.sampling_ratio, p.aligned) for p in poolers}) == 1
                and all(f.device.type == "cpu" for f in x))


def use_roi_align(model, impl):
    """Set every ROIPooler of `model` to ROIAlign implementation `impl`, in place.

    Args:
        model (nn.Module): any module (a detectron2 meta-architecture).
        impl (str): "sparse" -> each ROIPooler becomes a SparseROIPooler (its class is
            swapped: it has no state, so names and checkpoints are unchanged);
            "torchvision" -> back to detectron2's ROIPooler.

    Returns:
        int: the number of poolers set.
    """
    if impl not in ROI_ALIGN_IMPLS:
        raise ValueError(f"ROIAlign implementation {impl!r}: expected one of {ROI_ALIGN_IMPLS}")
    cls = SparseROIPooler if impl == "sparse" else ROIPooler
    count = 0
    for m in model.modules():
        if type(m) in (ROIPooler, SparseROIPooler):
            m.__class__ = cls
            count += 1
    return count


def _float32_features(pooler, args, kwargs):
    """Forward pre-hook of a ROIPooler: its features (`x`, the first argument) in float32."""
    up = lambda x: [f.float() if f.dtype in (torch.float16, torch.bfloat16) else f for f in x]  # noqa: E731
    if "x" in kwargs:
        return args, {**kwargs, "x": up(kwargs["x"])}
    return (up(args[0]),) + args[1:], kwargs


@contextlib.contextmanager
def float32_roi_pooling(model):
    """Within the block, every ROIPooler of `model` pools float32 features at float32 boxes.

    Under autocast the features are bfloat16 / float16, and detectron2's ROIAlign layer
    casts the boxes to the features' type before torchvision's roi_align: bfloat16 keeps 8
    significant bits, so a corner between 512 and 1024 pixels moves by up to 2 pixels (4 at
    1024-2048; float16: 0.25 and 0.5), and the pooled bins with it. Given float32 features,
    the pooler keeps boxes and bins in float32 (its output is float32; the head's layers
    cast it as autocast says). A forward pre-hook, removed on exit: `model` is left as it
    was. Used by INFERENCE_DTYPE (engine.precision) and bf16 training (engine.amp).
    """
    handles = [m.register_forward_pre_hook(_float32_features, with_kwargs=True)
               for m in model.modules() if isinstance(m, ROIPooler)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
