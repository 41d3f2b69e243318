"""TorchScript files (traced and scripted) give the eager model's detections on digits images."""
import copy

import pytest
import torch

from resnext_det.export import ExportedDetector, export_model
from resnext_det.modeling.inference import optimize_for_inference
from resnext_det.utils.testing import detection_error, max_rel_error
from tests.export.helpers import tiny_model


def _nhwc_3x3_weights(module):
    """For each 3x3 convolution weight with several input channels: is it stored NHWC?"""
    return [p.is_contiguous(memory_format=torch.channels_last)
            for p in module.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] == 3]


@pytest.mark.parametrize("folded", [False, True], ids=["as_trained", "folded"])
@pytest.mark.parametrize("method", ["tracing", "scripting"])
@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
def test_saved_file_gives_eager_detections(arch, method, folded, digits_inputs, tmp_path):
    model = tiny_model(arch)
    if folded:
        model = optimize_for_inference(model)  # norms folded, NHWC weights
        assert model.folded_norms > 0
    names = list(model.state_dict())
    path = export_model(model, digits_inputs[0]["image"], str(tmp_path), method=method)
    assert list(model.state_dict()) == names  # the model exported is left as it was

    exported = ExportedDetector(path)  # torch.jit.load of the file written
    assert all(w == folded for w in _nhwc_3x3_weights(exported.module))  # NHWC survives the file
    with torch.no_grad():  # one image at a time: a batch pads all to its largest size
        expected = [model([x])[0] for x in digits_inputs]
    got = exported(digits_inputs)
    for g, e in zip(got, expected):
        g, e = g["instances"], e["instances"]
        assert len(g) == len(e) > 10
        assert detection_error(g, e) < 1e-3


@pytest.mark.parametrize("form", ["a", "b"])
def test_paths_block_forms_compile(form, digits_inputs):
    """Forms (a) and (b) hold their C paths in a ModuleList, which TorchScript compiles too
    (the rest of a detector does not depend on the form: scripted in full above)."""
    backbone = tiny_model("faster_rcnn", "MODEL.RESNEXT.BLOCK_FORM", form).backbone
    scripted = torch.jit.script(copy.deepcopy(backbone))  # detectron2.export's patches loaded
    images = torch.stack([x["image"].float() for x in digits_inputs[:2]]) / 255
    with torch.no_grad():
        assert max_rel_error(scripted(images), backbone(images)) < 1e-6


def test_scripting_a_c4_detector_names_its_roi_heads(tmp_path):
    """detectron2's Res5ROIHeads does not compile (it refers to a mask_head a box-only model
    lacks): the error names the heads, the part that fails, and points to tracing."""
    from resnext_det.export import ExportError
    from resnext_det.export.export import export_scripting

    model = tiny_model("faster_rcnn", "MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads",
                       "MODEL.RPN.IN_FEATURES", ["res4"], "MODEL.ROI_HEADS.IN_FEATURES", ["res4"],
                       "MODEL.BACKBONE.NAME", "build_resnext_backbone",
                       "MODEL.RESNETS.OUT_FEATURES", ["res4"],
                       "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64]],
                       "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]])
    with pytest.raises(ExportError, match=r"(?s)torch\.jit\.script cannot compile this model .*"
                       r"MODEL\.ROI_HEADS\.NAME='ResNeXtRes5ROIHeads'.*--export-method tracing"):
        export_scripting(model, str(tmp_path / "model.ts"))
