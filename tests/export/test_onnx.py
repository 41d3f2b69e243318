"""ONNX files run in onnxruntime and give the eager model's outputs: the backbone alone
(features within 1e-4, at two input sizes), and the whole traced detector."""
import onnxruntime as ort  # pinned in requirements-test.txt: a missing one fails, not skips
import pytest
import torch

from resnext_det.export import ExportedDetector, ExportError, export_backbone_onnx, export_model
from resnext_det.modeling.inference import optimize_for_inference
from resnext_det.utils.testing import detection_error, max_rel_error
from tests.export.helpers import tiny_model


def _normalized(model, inputs):
    """The backbone's input as the detector makes it: normalized, one image per batch entry."""
    return torch.stack([(x["image"].float() - model.pixel_mean) / model.pixel_std for x in inputs])


@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
def test_backbone_in_onnxruntime(arch, digits_inputs, tmp_path):
    model = optimize_for_inference(tiny_model(arch))  # the deployed copy: folded, NHWC
    backbone = model.backbone
    path = str(tmp_path / "backbone.onnx")
    names = export_backbone_onnx(backbone, _normalized(model, digits_inputs[:2]), path)
    assert names == list(backbone.output_shape())
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    # batch 2 at 64x64 (the size exported) and batch 1 at 64x128 (dynamic axes)
    for images in (_normalized(model, digits_inputs[:2]), _normalized(model, digits_inputs[2:])):
        got = dict(zip(names, session.run(None, {"images": images.numpy()})))
        with torch.no_grad():
            expected = backbone(images)
        assert set(got) == set(expected)
        for name in names:
            assert got[name].shape == tuple(expected[name].shape)
            assert max_rel_error(torch.from_numpy(got[name]), expected[name]) < 1e-4, name


@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
def test_traced_detector_in_onnxruntime(arch, digits_inputs, tmp_path):
    model = tiny_model(arch)
    path = export_model(model, digits_inputs[0]["image"], str(tmp_path), fmt="onnx")
    exported = ExportedDetector(path)  # an onnxruntime session on the file
    assert exported.outputs == ["pred_boxes", "pred_classes", "scores", "image_size"]
    for x in digits_inputs:
        with torch.no_grad():
            expected = model([x])[0]["instances"]
        got = exported([x])[0]["instances"]
        assert len(got) == len(expected) > 10
        assert detection_error(got, expected) < 1e-3


def test_op_without_onnx_translation_is_an_export_error(digits_inputs, tmp_path):
    model = tiny_model("faster_rcnn", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                       [False, False, False, True])
    with pytest.raises(ExportError,
                       match=r"deform_conv2d.*DEFORM_ON_PER_STAGE.*--format torchscript"):
        export_model(model, digits_inputs[0]["image"], str(tmp_path), fmt="onnx")


def test_a_re_export_in_the_other_format_leaves_no_earlier_file(digits_inputs, tmp_path):
    """TorchScript, then ONNX into the same folder: the earlier model.ts and detectron2's
    dumps of its code are gone (they stood beside a config.yaml of the ONNX export), and the
    other way round."""
    model = tiny_model("faster_rcnn")
    image = digits_inputs[0]["image"]
    export_model(model, image, str(tmp_path), fmt="torchscript")
    assert {"model.ts", "model_ts_code.txt"} <= {p.name for p in tmp_path.iterdir()}
    export_model(model, image, str(tmp_path), fmt="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    export_model(model, image, str(tmp_path), fmt="torchscript")
    assert "model.onnx" not in {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "model.ts").is_file()
