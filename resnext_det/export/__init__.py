"""Exporting trained detectors for deployment: TorchScript (tracing, scripting) and ONNX."""
from .export import (
    FORMATS,
    METHODS,
    ONNX_OPSET,
    ExportError,
    check_options,
    export_backbone_onnx,
    export_model,
    export_scripting,
    export_tracing,
)
from .runtime import ExportedDetector
