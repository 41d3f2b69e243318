"""Our own files: the paper's other block forms as a target, and a detector checkpoint as a source."""
import pytest
import torch

from ckpt_helpers import TINY, FEATURES, ours_backbone, ours_classifier
from resnext_det.checkpoint import convert_weights
from resnext_det.checkpoint.block_forms import from_grouped
from resnext_det.modeling.blocks import BLOCK_FORMS
from resnext_det.utils.testing import max_rel_error

TOL = 1e-5


def _outputs(model, images):
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("form", [f for f in BLOCK_FORMS if f != "c"])  # c: the source's
def test_block_form_target(form, tiny_model, tiny_state, images, tmp_path):
    torch.save(tiny_state, tmp_path / "ours.pth")
    result = convert_weights(tmp_path / "ours.pth", keep_fc=True, block_form=form)
    assert result.metadata.block_form == form
    assert set(result.state_dict) == set(from_grouped(tiny_state, form))
    model = ours_classifier(TINY, result.state_dict, num_classes=10, block_form=form)
    assert max_rel_error(_outputs(model, images), _outputs(tiny_model, images)) < TOL


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
    assert set(expected) == set(FEATURES) and max_rel_error(got, expected) == 0
