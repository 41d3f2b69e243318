"""torchvision and timm weights: converted, then equal outputs to the source model's."""
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from ckpt_helpers import FEATURES, load_pkl, ours_backbone, ours_classifier
from resnext_det.checkpoint import convert_weights, save_converted
from resnext_det.utils.testing import max_rel_error, randomize_norms_

TOL = 1e-5
CASES = [  # (builder, our template, file name: the extension says nothing to the reader)
    (torchvision.models.resnext50_32x4d, "X50_32x4d", "tv_resnext50.pth"),
    (torchvision.models.resnet50, "R50", "tv_resnet50.pth"),
    (lambda: timm.create_model("resnext50_32x4d"), "X50_32x4d", "timm_resnext50.safetensors"),
    (lambda: timm.create_model("resnet50"), "R50", "timm_resnet50.bin"),
]


def _layer_outputs(model, x):
    outs = {}
    hooks = [getattr(model, f"layer{i}").register_forward_hook(
        lambda m, inp, out, name=name: outs.__setitem__(name, out))
        for i, name in enumerate(FEATURES, start=1)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return outs, logits


def _save(state, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("build,template,name", CASES, ids=[c[2] for c in CASES])
def test_converted_outputs_match_source(build, template, name, images, tmp_path):
    torch.manual_seed(0)
    source = randomize_norms_(build()).eval()
    _save(source.state_dict(), tmp_path / name)
    result = convert_weights(tmp_path / name, keep_fc=True)
    assert result.metadata.template == template
    assert result.metadata.source_format == "torchvision"
    assert result.metadata.stride_in_1x1 is False and result.metadata.input_format == "RGB"
    weights = load_pkl(save_converted(result, tmp_path / "out.pkl"))["model"]
    expected_features, expected_logits = _layer_outputs(source, images)
    with torch.no_grad():
        logits = ours_classifier(template, weights)(images)
        features = ours_backbone(template, weights)(images)
    assert max_rel_error(logits, expected_logits) < TOL
    assert max_rel_error(features, expected_features) < TOL


def test_fc_dropped_by_default(tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    result = convert_weights(tmp_path / "r50.pth")
    assert not any(k.startswith("linear.") for k in result.state_dict)
    assert ("fc.weight", "linear.weight") in result.report.renames
    assert any(src == "linear.weight" for src, _ in result.report.dropped)
