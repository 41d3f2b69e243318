"""Each source's key layout fed to every other source: one claim, and a message that names
the layout it was taken for and the first keys that did not fit (never 'blocks per stage')."""
import itertools
from types import SimpleNamespace

import pytest
import torch
import torchvision

from reference_models import form_b_resnext50, pretrainedmodels_resnext
from resnext_det.checkpoint.convert import ConversionReport, _check_fits, _rename
from resnext_det.checkpoint.detect import unwrap
from resnext_det.checkpoint.errors import ConversionError
from resnext_det.checkpoint.readers import read_weights
from resnext_det.checkpoint.sources import SOURCES
from t7_writer import to_t7, write_t7

BY_NAME = {source.name: source for source in SOURCES}


def _pycls_state():
    """pycls's own AnyNet ResNeXt (the model zoo's dds_baselines), as test_pycls.py builds it."""
    pytest.importorskip("pycls", reason="the oracle: pip install --no-deps pycls==0.1.1")
    import test_pycls

    try:
        return test_pycls.pycls_model(test_pycls._ANYNET).state_dict()
    finally:
        test_pycls.reset_cfg()


def _caffe2_blobs():
    """test_caffe2.py's Detectron-layout blobs of detectron2's own ResNeXt backbone: the
    layout detectron2's DetectionCheckpointer reads there (BN folded, fc1000)."""
    from test_caffe2 import c2_blobs, d2_backbone

    torch.manual_seed(0)
    return c2_blobs(d2_backbone("X50_2x4d", False).state_dict(), "detectron")


@pytest.fixture(scope="module")
def states(tiny_state, tmp_path_factory):
    """{source name: a state dict in that source's layout}."""
    t7 = write_t7(tmp_path_factory.mktemp("t7") / "b.t7", to_t7(form_b_resnext50()[0]))
    weights = read_weights(t7)
    return {
        "torchvision": torchvision.models.resnext50_32x4d().state_dict(),
        "pycls": _pycls_state(),
        "caffe2": _caffe2_blobs(),
        "torch7": unwrap(weights.obj, weights.container)[0],
        "pretrainedmodels": pretrainedmodels_resnext("resnext101_32x4d")[0].state_dict(),
        "resnext_det": dict(tiny_state),
    }


def test_every_layout_is_claimed_by_its_source_only(states):
    assert set(states) == set(BY_NAME)
    for name, state in states.items():
        assert [s.name for s in SOURCES if s.matches(state, {})] == [name]


@pytest.mark.parametrize("given, taken_for", [
    pair for pair in itertools.permutations([s.name for s in SOURCES], 2)])
def test_a_layout_read_as_another_names_that_layout(states, given, taken_for):
    source, state = BY_NAME[taken_for], states[given]
    weights = SimpleNamespace(path=f"{given}_weights.bin", container="torch-zip")
    try:
        renamed, problems = _rename(source, state, ConversionReport(), "test")
        _check_fits(source, problems, state, weights)
    except ConversionError as e:
        message = str(e)
    else:
        pytest.fail(f"{given} keys read as {taken_for} raised nothing")
    assert "blocks per stage" not in message
    if "is not a Torch7 module index path" in message:  # the Torch7 rename names its key:
        assert taken_for == "torch7"  # the first, as none of the other layouts' keys is one
        assert f"key {next(iter(state))!r} is not a Torch7 module index path" in message
        return
    assert f"read as {taken_for} weights" in message and source.layout in message
    assert "unmatched source key" in message and "(shape " in message
