"""MODEL.RESNEXT.INFERENCE_DTYPE: evaluation and prediction in bfloat16 or float16.

The model's forward runs under torch.autocast(device type, dtype), the standard
mixed-precision contract: convolutions and matrix products compute in the lower type;
what autocast keeps in float32 (torchvision's ROIAlign and NMS; on CUDA softmax too) and
detectron2's box decoding (Box2BoxTransform casts the deltas to float32) stay float32.
The outputs come back in float32 (boxes, scores, masks, keypoints), so the COCO
evaluators, the results json and the Visualizer see what they see from a float32 model.

The heads' outputs go to detectron2's post-processing in float32 (float32_head_outputs):
CPU autocast runs softmax and sigmoid in their input's type, so every score was a bfloat16
number (~128 per octave: detections tied, and COCOeval ranked them by chance), and
heatmaps_to_keypoints writes keypoints into a tensor of the heatmaps' type, which rounded
their coordinates by up to 2 px at 512-1024 px. The layers before stay in the lower type.

ROI pooling stays float32 (modeling.roi_align.float32_roi_pooling): detectron2's ROIAlign
would round the boxes to the lower type, up to 2 pixels at 512-1024 in bfloat16. On the
digits demo model (benchmarks/README.md): box AP -0.31 with the rounded boxes, +0.07
without.

The contract is quality, not a largest error: box AP within 0.3 of float32's on the
digits val set (benchmarks/ap_contract.py, measured in benchmarks/README.md). Lower
precision pays where the hardware has it: GPUs (float16; bfloat16 from Ampere), CPUs with
AVX-512 BF16 or AMX. On a CPU without them oneDNN emulates bfloat16, several times
slower than float32 (benchmarks/README.md), and a warning says so. Exported files stay
float32 (inference_model(..., for_export=True)).
"""
import contextlib
import logging

import torch
from detectron2.modeling.meta_arch import DenseDetector
from detectron2.modeling.roi_heads import (BaseKeypointRCNNHead, BaseMaskRCNNHead,
                                           FastRCNNOutputLayers)
from detectron2.structures import Instances
from torch import nn

from ..config.checks import inference_dtype
from ..config.errors import ConfigError
from ..modeling.roi_align import float32_roi_pooling
from .amp import native_bf16

logger = logging.getLogger(__name__)
KEY = "MODEL.RESNEXT.INFERENCE_DTYPE"
_LOWER = (torch.float16, torch.bfloat16)


def float32_outputs(value):
    """`value` with its float16 / bfloat16 tensors in float32: tensors, Instances and their
    fields (Boxes, BitMasks, Keypoints: anything with a `.tensor`), lists, tuples, dicts."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in _LOWER else value
    if isinstance(value, Instances):
        return Instances(value.image_size,
                         **{k: float32_outputs(v) for k, v in value.get_fields().items()})
    if isinstance(value, dict):
        return {k: float32_outputs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(float32_outputs(v) for v in value)
    tensor = getattr(value, "tensor", None)
    if isinstance(tensor, torch.Tensor) and tensor.dtype in _LOWER:
        return type(value)(tensor.float())
    return value


def _float32_output(module, args, output):
    """Forward hook: `output` with its lower-type tensors in float32."""
    return float32_outputs(output)


def _float32_layers(layers):
    """A mask / keypoint head's `layers` (the network before detectron2's post-processing:
    BaseMaskRCNNHead and BaseKeypointRCNNHead call it in forward), returning float32."""
    return lambda x: float32_outputs(layers(x))


@contextlib.contextmanager
def float32_head_outputs(model):
    """Within the block, detectron2's post-processing of `model`'s heads reads float32 outputs.

    The box predictors' (FastRCNNOutputLayers: class logits and deltas, before softmax) and
    dense detectors' heads (RetinaNet's logits, before sigmoid) by a forward hook; the mask
    and keypoint heads' by their `layers` (logits before sigmoid and pasting, heatmaps
    before heatmaps_to_keypoints), set on the instance and removed on exit.
    """
    handles, heads = [], []
    for m in model.modules():
        if isinstance(m, FastRCNNOutputLayers):
            handles.append(m.register_forward_hook(_float32_output))
        elif isinstance(m, DenseDetector):
            handles.append(m.head.register_forward_hook(_float32_output))
        elif isinstance(m, (BaseMaskRCNNHead, BaseKeypointRCNNHead)) and "layers" not in vars(m):
            m.layers = _float32_layers(m.layers)
            heads.append(m)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for head in heads:
            del head.layers  # the class's method again


class AutocastInference(nn.Module):
    """`model`'s forward under torch.autocast(device_type, dtype), outputs back in float32,
    its ROI pooling (float32_roi_pooling) and its heads' post-processing
    (float32_head_outputs) in float32.

    `model` is held, not copied: eval() / train() reach it, and its weights stay float32.
    """

    def __init__(self, model, *, device_type, dtype):
        """
        Args:
            model (nn.Module): a detectron2 meta-architecture (or any module).
            device_type (str): "cpu" or "cuda", where autocast applies.
            dtype (torch.dtype): torch.bfloat16 or torch.float16.
        """
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, *args, **kwargs):
        with float32_roi_pooling(self.model), float32_head_outputs(self.model), \
                torch.autocast(self.device_type, dtype=self.dtype):
            outputs = self.model(*args, **kwargs)
        return float32_outputs(outputs)


def with_inference_dtype(cfg, model, *, for_export=False):
    """`model` as it runs in MODEL.RESNEXT.INFERENCE_DTYPE.

    Args:
        cfg (CfgNode): MODEL.RESNEXT.INFERENCE_DTYPE ("float32", "bfloat16", "float16"
            on CUDA) and MODEL.DEVICE are read.
        model (nn.Module): the (eval-mode) model.
        for_export (bool): True -> `model` itself: an exported file is float32 whatever
            the key says (logged when it says otherwise).

    Returns:
        nn.Module: `model` for "float32" (or for_export), else an AutocastInference of it.
    """
    name = inference_dtype(cfg)
    if name == "float32":
        return model
    if for_export:
        logger.warning(f"{KEY}={name!r} applies to evaluation and prediction; the exported file "
                       "computes in float32 (set the precision in the runtime that runs it).")
        return model
    device_type, dtype = cfg.MODEL.DEVICE.split(":")[0], getattr(torch, name)
    if (device_type == "cuda" and dtype is torch.bfloat16 and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        raise ConfigError(KEY, name, f"'float16' or 'float32' on {torch.cuda.get_device_name()}",
                          "bfloat16 needs a GPU of compute capability 8.0 (Ampere) or newer.")
    if device_type == "cpu" and not native_bf16():
        logger.warning(f"{KEY}='bfloat16' on a CPU without bfloat16 instructions (AVX-512 BF16 / "
                       "AMX): emulated, several times slower than float32 here.")
    return AutocastInference(model, device_type=device_type, dtype=dtype)
