"""pycls, Caffe2 and Torch7 fixtures written from a known state dict, converted back."""
import pickle

import pytest
import torch

from ckpt_helpers import (TINY, FEATURES, load_pkl, ours_backbone, ours_classifier, rel_err,
                          to_caffe2_blobs, to_pycls, write_t7_resnext)
from resnext_det import parse_template
from resnext_det.checkpoint import convert_weights, save_converted, sniff_container
from resnext_det.checkpoint.block_forms import from_grouped
from resnext_det.checkpoint.sources import caffe2

TOL = 1e-5


def _outputs(model, images):
    with torch.no_grad():
        return model(images)


def _round_trip(path, tiny_model, images, tmp_path, norm="BN", tol=TOL):
    result = convert_weights(path, keep_fc=True)
    assert result.metadata.template == TINY
    weights = load_pkl(save_converted(result, tmp_path / "out.pkl"))["model"]
    model = ours_classifier(TINY, weights, num_classes=10, norm=norm,
                            stride_in_1x1=result.metadata.stride_in_1x1)
    assert rel_err(_outputs(model, images), _outputs(tiny_model, images)) < tol
    return result


def test_pycls_round_trip(tiny_model, tiny_state, images, tmp_path):
    path = tmp_path / "model.pyth"
    torch.save({"epoch": 1, "model_state": to_pycls(tiny_state)}, path)
    result = _round_trip(path, tiny_model, images, tmp_path)
    meta = result.metadata
    assert meta.source_format == "pycls" and meta.input_format == "BGR"
    assert meta.stride_in_1x1 is False and "no cfg" in meta.notes


def test_caffe2_round_trip(tiny_model, tiny_state, images, tmp_path):
    path = tmp_path / "X-50-2x4d.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": dict(to_caffe2_blobs(tiny_state), pred_w_momentum=0)}, f)
    # BN folded into (s, b) rounds differently from BN: a slightly looser bound.
    result = _round_trip(path, tiny_model, images, tmp_path, norm="FrozenBN", tol=1e-4)
    meta = result.metadata
    assert meta.source_format == "caffe2" and meta.norm == "FrozenBN"
    assert (meta.input_format, meta.stride_in_1x1) == ("BGR", False)  # "fair" preset, C > 1
    assert meta.pixel_std == [57.375, 57.12, 58.395]
    assert any("momentum" in src for src, _ in result.report.dropped)


def test_caffe2_presets():
    msra = caffe2.defaults({}, parse_template("R50"))
    assert msra["stride_in_1x1"] is True and msra["pixel_std"] == [1.0, 1.0, 1.0]
    assert caffe2.defaults({}, parse_template("X101_32x8d"))["stride_in_1x1"] is False


@pytest.mark.parametrize("form", ["c", "b"])
def test_torch7_round_trip(form, tiny_model, tiny_state, images, tmp_path):
    """Torch7 'resnext_C' (grouped conv) and 'resnext_B' (ConcatTable of paths) models."""
    path = tmp_path / "resnext_50_2x4d.t7"
    write_t7_resnext(path, tiny_state, parse_template(TINY), form=form)
    assert sniff_container(path) == "torch7"
    result = _round_trip(path, tiny_model, images, tmp_path)
    assert result.metadata.source_format == "torch7"
    first_3x3 = {"c": ("4.0.0.0.3.weight", "res2.0.conv2.weight"),
                 "b": ("4.0.0.0.0.1.3.weight", "res2.0.paths.1.conv2.weight")}[form]
    assert first_3x3 in result.report.renames


@pytest.mark.parametrize("form", ["a", "b"])
def test_block_form_target(form, tiny_model, tiny_state, images, tmp_path):
    torch.save(tiny_state, tmp_path / "ours.pth")
    result = convert_weights(tmp_path / "ours.pth", keep_fc=True, block_form=form)
    assert result.metadata.block_form == form
    assert set(result.state_dict) == set(from_grouped(tiny_state, form))
    model = ours_classifier(TINY, result.state_dict, num_classes=10, block_form=form)
    assert rel_err(_outputs(model, images), _outputs(tiny_model, images)) < TOL


def test_detection_checkpoint_of_ours(tiny_state, images, tmp_path):
    """A C4 detector's checkpoint: backbone.* and roi_heads.res5.* become ours again."""
    state = {(f"roi_heads.{k}" if k.startswith("res5") else f"backbone.{k}"): v
             for k, v in tiny_state.items() if not k.startswith("linear")}
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(3, 4)
    torch.save({"model": state, "iteration": 9}, tmp_path / "model_final.pth")
    result = convert_weights(tmp_path / "model_final.pth")
    assert result.metadata.source_format == "resnext_det"
    expected = ours_backbone(TINY, {k: v for k, v in tiny_state.items()})(images)
    got = ours_backbone(TINY, result.state_dict)(images)
    assert all(rel_err(got[f], expected[f]) == 0 for f in FEATURES)
