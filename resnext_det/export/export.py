"""A detector as one deployable file: TorchScript (tracing or scripting) or ONNX (tracing).

On detectron2's export API (detectron2/export): `TracingAdapter` flattens the model's
list-of-dicts input and Instances output into tuples of tensors for `torch.jit.trace` and
`torch.onnx.export`; `scripting_with_instances` gives Instances the static fields that
`torch.jit.script` needs. What a file computes, per image tensor (CHW, INPUT.FORMAT,
resized as INPUT.MIN/MAX_SIZE_TEST say, not normalized; float32 for tracing):
  tracing    -> a tuple: the Instances fields in sorted order, then image_size; the names
                are stored with the file (OUTPUTS_FILE inside a .ts, the output names of
                an .onnx), e.g. (pred_boxes, pred_classes, scores, image_size);
  scripting  -> takes a list of {"image": tensor} (a batch, padded to its largest image)
                and returns one dict of fields per image.
Boxes are in the coordinates of the image given to the file; scaling them to the original
picture is detectron2's `detector_postprocess` (runtime.ExportedDetector does it).

torch 2.14 marks torch.jit deprecated (a FutureWarning) but runs it. For ONNX we use
torch's TorchScript-based exporter (`dynamo=False`): the newer torch.export-based one,
torch's default since 2.9, needs onnxscript, and (tried with onnxscript 0.7.2) exports the
backbone but stops at the detector's data-dependent shapes (GuardOnDataDependentSymNode).
ONNX has no memory format: a channels_last model exports as any other.
"""
import copy
import json
import logging
import os
import warnings
from typing import Dict, List

import torch
from detectron2.export import TracingAdapter, dump_torchscript_IR, scripting_with_instances
from detectron2.export.flatten import InstancesSchema
from detectron2.modeling import GeneralizedRCNN, PanopticFPN
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes
from torch import Tensor, nn

from ..errors import UserError
from ..modeling.roi_align import use_roi_align
from ..utils.io import staged_folder

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
METHODS = ("tracing", "scripting")
# ROIAlign with aligned=True (detectron2's) exports from opset 16 on (torchvision's symbolic).
ONNX_OPSET = 17
OUTPUTS_FILE = "outputs.json"  # inside a .ts: {"method": "tracing"|"scripting", "outputs": [...]}
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
# what an export writes: the file, and for TorchScript detectron2's dump_torchscript_IR's
EXPORT_FILES = {*FILE_NAMES.values(), "model_ts_code.txt", "model_ts_IR.txt",
                "model_ts_IR_inlined.txt", "model.txt"}
# Every Instances field a detectron2 detector sets at inference (detectron2's export_model).
SCRIPTING_FIELDS = {
    "proposal_boxes": Boxes, "objectness_logits": Tensor, "pred_boxes": Boxes, "scores": Tensor,
    "pred_classes": Tensor, "pred_masks": Tensor, "pred_keypoints": Tensor,
    "pred_keypoint_heatmaps": Tensor,
}


class ExportError(UserError, ValueError):
    """A model, format or method that cannot be exported as asked; the message says what can."""


def _first_lines(error, count=8):
    return "\n".join(str(error).strip().splitlines()[:count])


def _onnx_hint(error):
    if "deform_conv2d" in str(error):  # torchvision registers no ONNX symbolic for it
        return (" The deformable 3x3s (MODEL.RESNETS.DEFORM_ON_PER_STAGE) have no ONNX "
                "translation in torch's exporter.")
    return ""


def require_onnx():
    """torch's ONNX exporter writes its protobuf with the `onnx` package: an error if missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("--format onnx needs the onnx package, which is not installed: "
                          "pip install onnx onnxruntime (onnxruntime runs the exported file; "
                          "requirements-test.txt pins both).") from None


def check_options(fmt, method):
    """Format and method exist and fit together; else an ExportError saying what does."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not valid: expected one of {list(FORMATS)}.")
    if method not in METHODS:
        raise ExportError(f"--export-method {method!r} is not valid: expected one of "
                          f"{list(METHODS)}.")
    if fmt == "onnx" and method != "tracing":
        raise ExportError("--format onnx needs --export-method tracing: ONNX files are made "
                          "from a trace; scripting writes TorchScript only.")


def check_exportable(model):
    """A meta-architecture whose inputs and outputs we know how to flatten."""
    if isinstance(model, PanopticFPN):  # a GeneralizedRCNN whose inference returns two things
        raise ExportError(
            "MODEL.META_ARCHITECTURE='PanopticFPN' cannot be exported here: its inference "
            "returns the semantic segmentation beside the instances (and combines them into "
            "the panoptic one), which the export does not flatten. MODEL.META_ARCHITECTURE "
            "GeneralizedRCNN with the same weights exports its instances (boxes, masks); the "
            "sem_seg_head's weights are then left unused.")
    if not isinstance(model, (GeneralizedRCNN, DenseDetector)):
        raise ExportError(f"MODEL.META_ARCHITECTURE={type(model).__name__!r} cannot be exported "
                          "here: expected a GeneralizedRCNN (Faster/Mask R-CNN) or a "
                          "DenseDetector (RetinaNet).")


def check_onnx_exportable(model):
    """Heads that torch's ONNX exporter cannot translate, refused before the trace."""
    if getattr(getattr(model, "roi_heads", None), "keypoint_on", False):
        # heatmaps_to_keypoints is torch.jit.script_if_tracing: scripted inside the trace, its
        # loop indexes a tensor of unknown rank, a SymbolicValueError after the whole trace
        raise ExportError("--format onnx cannot export a keypoint head (MODEL.KEYPOINT_ON "
                          "True): torch's ONNX exporter cannot translate detectron2's "
                          "heatmaps_to_keypoints. --format torchscript exports this model.")


def _trace_inference(model):
    """How TracingAdapter calls the model: R-CNN without its postprocessing (detectron2's
    export_model does the same; sizes stay traced), a dense detector as it is."""
    if isinstance(model, GeneralizedRCNN):
        return lambda m, inputs: [{"instances": m.inference(inputs, do_postprocess=False)[0]}]
    return None


def traced_output_names(adapter):
    """Names of a traced detector's outputs: one image's Instances fields as TracingAdapter
    flattens them (sorted, one tensor each), then image_size."""
    schema = adapter.outputs_schema.schemas[0].schemas[0]  # [ {"instances": Instances} ]
    if not isinstance(schema, InstancesSchema):
        raise TypeError(f"expected the model to return [{{'instances': Instances}}]; got {schema}")
    return list(schema.keys) + ["image_size"]


def export_tracing(model, image, path, fmt="torchscript"):
    """Trace `model` on one image and save it as TorchScript or ONNX.

    Args:
        model (nn.Module): a detectron2 detector in eval mode (as trained, or its
            optimize_for_inference copy).
        image (Tensor): CHW, as the model takes it in {"image": ...}; the trace records the
            operations run on it (other sizes work for Faster R-CNN and RetinaNet). The file
            takes float32 images, as detectron2's DefaultPredictor gives them (an ONNX
            input has one dtype); a uint8 image (DatasetMapper's) is converted.
        path (str): the file to write.
        fmt (str): "torchscript" or "onnx".

    Returns:
        list[str]: the names of the outputs, in order.
    """
    image = image.float()
    adapter = TracingAdapter(model, [{"image": image}], _trace_inference(model)).eval()
    with warnings.catch_warnings(), torch.no_grad():
        # detectron2's graphs turn shapes into constants in a few places it has checked
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            # check_trace=False: the check traces a second time (3x the time); main.run and
            # tests/export compare the file's detections with the model's instead
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
            names = traced_output_names(adapter)
            meta = json.dumps({"method": "tracing", "outputs": names})
            traced.save(path, _extra_files={OUTPUTS_FILE: meta})
            dump_torchscript_IR(traced, os.path.dirname(path) or ".")
            return names
        require_onnx()
        adapter(image)  # fills outputs_schema, for the names
        names = traced_output_names(adapter)
        axes = {"image": {1: "height", 2: "width"}}
        axes.update({name: {0: "detections"} for name in names if name != "image_size"})
        try:
            torch.onnx.export(adapter, (image,), path, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["image"], output_names=names, dynamic_axes=axes)
        except torch.onnx.errors.OnnxExporterError as e:  # an op or a value it cannot translate
            raise ExportError(f"--format onnx: {_first_lines(e, 1)}{_onnx_hint(e)} "
                              "--format torchscript exports this model.") from None
        return names


class _ScriptableRCNN(nn.Module):
    """GeneralizedRCNN.inference without postprocessing; one dict of fields per image
    (a scripted module cannot return detectron2's Instances to Python)."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.eval()

    def forward(self, inputs: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        return [x.get_fields() for x in self.model.inference(inputs, do_postprocess=False)]


class _ScriptableDense(_ScriptableRCNN):
    """A DenseDetector (RetinaNet); scripted, its forward returns unprocessed Instances."""

    def forward(self, inputs: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        return [x.get_fields() for x in self.model(inputs)]


def _heads_named(model):
    """', MODEL.ROI_HEADS.NAME=...' for an R-CNN (detectron2's Res5ROIHeads and
    CascadeROIHeads do not compile), else ''."""
    heads = getattr(model, "roi_heads", None)
    return f", MODEL.ROI_HEADS.NAME={type(heads).__name__!r}" if heads is not None else ""


def export_scripting(model, path, *, block_form="c"):
    """Compile `model` with torch.jit.script and save it (TorchScript).

    Args:
        model (nn.Module): a GeneralizedRCNN or DenseDetector in eval mode.
        path (str): the file to write.
        block_form (str): MODEL.RESNEXT.BLOCK_FORM, named if compiling fails.

    Returns:
        list[str]: the field names each image's dict can hold.
    """
    # a copy: torch.jit.script puts what detectron2's __prepare_scriptable__ returns (a
    # ResNet whose res2..res5 became `stages`) into the parent modules, in place
    model = copy.deepcopy(model)
    use_roi_align(model, "torchvision")  # the sparse ROIAlign's Python does not compile
    wrapper = (_ScriptableRCNN if isinstance(model, GeneralizedRCNN) else _ScriptableDense)(model)
    try:
        scripted = scripting_with_instances(wrapper, SCRIPTING_FIELDS)
    except (RuntimeError, torch.jit.frontend.NotSupportedError) as e:
        raise ExportError(
            f"--export-method scripting: torch.jit.script cannot compile this model "
            f"(MODEL.RESNEXT.BLOCK_FORM={block_form!r}, MODEL.META_ARCHITECTURE="
            f"{type(model).__name__!r}{_heads_named(model)}). TorchScript says:\n{_first_lines(e)}\n"
            "Use --export-method tracing, which records the operations run on the sample "
            "image instead of compiling the Python code.") from None
    meta = json.dumps({"method": "scripting", "outputs": sorted(SCRIPTING_FIELDS)})
    scripted.save(path, _extra_files={OUTPUTS_FILE: meta})
    dump_torchscript_IR(scripted, os.path.dirname(path) or ".")
    return sorted(SCRIPTING_FIELDS)


class _FeaturesAsTuple(nn.Module):
    """A backbone whose dict of features is returned as a tuple, in `names` order."""

    def __init__(self, backbone, names):
        super().__init__()
        self.backbone, self.names = backbone, list(names)

    def forward(self, images):
        features = self.backbone(images)
        return tuple(features[name] for name in self.names)


def export_backbone_onnx(backbone, images, path):
    """The backbone alone (e.g. ResNeXt + FPN) as ONNX: normalized NCHW images -> features.

    Batch, height and width are dynamic (height and width multiples of the backbone's
    size_divisibility, 32 for FPN, as detectron2 pads them).

    Args:
        backbone (Backbone): in eval mode.
        images (Tensor): NCHW, normalized as the detector does ((x - PIXEL_MEAN) / PIXEL_STD).
        path (str): the file to write.

    Returns:
        list[str]: the output names: the backbone's features ("p2".."p6" for FPN).
    """
    require_onnx()
    names = list(backbone.output_shape())
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_FeaturesAsTuple(backbone, names).eval(), (images,), path, dynamo=False,
                          opset_version=ONNX_OPSET, input_names=["images"], output_names=names,
                          dynamic_axes=axes)
    return names


def export_model(model, image, output_dir, *, fmt="torchscript", method="tracing", block_form="c"):
    """Export a detector into `output_dir` (model.ts or model.onnx); returns the file's path.

    TorchScript exports also write detectron2's dump of the code and graphs
    (model_ts_code.txt, model_ts_IR.txt, model_ts_IR_inlined.txt, model.txt).

    Args:
        model (nn.Module): a GeneralizedRCNN or DenseDetector, in eval mode.
        image (Tensor): a CHW sample image as the model takes it (for tracing).
        output_dir (str): created if missing. The files are written in a staging folder
            there and moved in when all are written (utils/io.staged_folder).
        fmt (str): "torchscript" or "onnx" (tracing only).
        method (str): "tracing" or "scripting".
        block_form (str): MODEL.RESNEXT.BLOCK_FORM, for the error if scripting fails.
    """
    check_options(fmt, method)
    check_exportable(model)
    if fmt == "onnx":
        check_onnx_exportable(model)
    if model.training:
        raise ValueError("export a model in eval mode (model.eval())")
    with staged_folder(output_dir) as staging:  # a kill or error keeps an earlier export whole
        staged = os.path.join(staging, FILE_NAMES[fmt])
        if method == "tracing":
            names = export_tracing(model, image, staged, fmt)
        else:
            names = export_scripting(model, staged, block_form=block_form)
        written = set(os.listdir(staging))
    for stale in sorted(EXPORT_FILES - written):  # an earlier export's of the other format:
        if os.path.isfile(os.path.join(output_dir, stale)):  # a model.ts beside a new .onnx
            os.remove(os.path.join(output_dir, stale))
    path = os.path.join(output_dir, FILE_NAMES[fmt])
    what = "outputs" if method == "tracing" else "one dict per image, with fields among"
    logger.info(f"{path}: {method}; {what} {names}")
    return path
