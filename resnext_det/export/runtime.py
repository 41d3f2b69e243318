"""An exported file called like the detectron2 model it came from.

`ExportedDetector(path)` loads a model.ts (traced or scripted) or a model.onnx (run in
onnxruntime) and maps detectron2's inputs ([{"image", "height", "width"}]) to its outputs
([{"instances": Instances}] in each picture's own pixels), so that detectron2's
`inference_on_dataset` evaluates it as it evaluates the eager model.
"""
import json
import os

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from .export import OUTPUTS_FILE, ExportError

_BOX_FIELDS = ("pred_boxes", "proposal_boxes")


def _instances(image_size, fields):
    """Instances from a dict of tensors; box fields wrapped as Boxes."""
    fields = {k: Boxes(v) if k in _BOX_FIELDS else v for k, v in fields.items()}
    return Instances(tuple(int(s) for s in image_size), **fields)


def _load_onnx(path):
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"{path}: running an ONNX file needs onnxruntime, which is not "
                          "installed: pip install onnxruntime.") from None
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


class ExportedDetector:
    """A model.ts or model.onnx with the interface of a detectron2 detector in eval mode."""

    def __init__(self, path):
        """
        Args:
            path (str): a file written by resnext_det.export.export_model.
        """
        if not os.path.isfile(path):
            raise ExportError(f"{path}: no such file; tools/export_model.py writes it.")
        self.path = path
        if path.endswith(".onnx"):
            self.session = _load_onnx(path)
            self.method = "tracing"
            self.outputs = [o.name for o in self.session.get_outputs()]
            return
        extra = {OUTPUTS_FILE: ""}
        self.module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
        if not extra[OUTPUTS_FILE]:
            raise ExportError(f"{path}: a TorchScript file without {OUTPUTS_FILE}; it was not "
                              "written by tools/export_model.py.")
        meta = json.loads(extra[OUTPUTS_FILE])
        self.method, self.outputs = meta["method"], meta["outputs"]

    def _run_traced(self, image):
        image = image.float()  # traced on float32 (an ONNX input has one dtype)
        if hasattr(self, "session"):
            values = self.session.run(None, {"image": image.numpy()})
            values = [torch.from_numpy(v) for v in values]
        else:
            values = self.module(image)
        fields = dict(zip(self.outputs, values))
        return _instances(fields.pop("image_size").tolist(), fields)

    @torch.no_grad()
    def raw(self, inputs):
        """One Instances per input, in the coordinates of the image given (not postprocessed).
        One image per call, as traced (a batch would pad the images to its largest)."""
        if self.method == "tracing":
            return [self._run_traced(x["image"]) for x in inputs]
        return [_instances(x["image"].shape[-2:], self.module([{"image": x["image"]}])[0])
                for x in inputs]

    @torch.no_grad()
    def __call__(self, inputs):
        """
        Args:
            inputs (list[dict]): detectron2's test inputs: "image" (CHW tensor), optional
                "height" and "width" (the picture's size; default the image's).
        Returns:
            list[dict]: {"instances": Instances} per input, scaled to height x width.
        """
        return [{"instances": detector_postprocess(r, x.get("height", r.image_size[0]),
                                                    x.get("width", r.image_size[1]))}
                for x, r in zip(inputs, self.raw(inputs))]
