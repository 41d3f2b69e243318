"""pycls checkpoints, checked against pycls itself (pycls 0.1.1 from PyPI, the oracle).

pycls builds the model from its own config (MODEL.TYPE resnet with either stride
placement; MODEL.TYPE anynet as in its model zoo's R-/X- dds_baselines) with random
weights and BN statistics, and writes the checkpoint with its own save_checkpoint
({epoch, model_state, optimizer_state, cfg}). The converted weights must compute pycls's
logits and stage outputs (s1..s4 = res2..res5) with the stride their metadata states.

pycls 0.1.1 predates the ema layout (pycls master since 2021-05: model_state and
ema_state with test_err and ema_err); that test writes the dict as master's
save_checkpoint does and checks that the state pycls's load_checkpoint picks is the one
converted.
"""
import pytest
import torch
# The oracle, pinned in requirements-test.txt (tools/setup_env.sh installs it): a hard
# import, so that a missing pycls fails the run instead of skipping these tests.
from pycls.core import builders, checkpoint
from pycls.core.config import cfg as pycls_cfg, reset_cfg
from yacs.config import CfgNode

from ckpt_helpers import FEATURES, TINY, ours_backbone, ours_classifier
from resnext_det.checkpoint import ConversionError, convert_weights
from resnext_det.utils.testing import max_rel_error, randomize_norms_

_COMMON = """
MODEL: {DEPTH: 50, NUM_CLASSES: 10}
TRAIN: {DATASET: imagenet}
TEST: {DATASET: imagenet}
"""
# MODEL.TYPE resnet: pycls/models/resnet.py, stride from RESNET.STRIDE_1X1 (default True).
_RESNET = """
MODEL: {TYPE: resnet}
RESNET: {TRANS_FUN: bottleneck_transform, NUM_GROUPS: 2, WIDTH_PER_GROUP: 4, STRIDE_1X1: %s}
"""
# MODEL.TYPE anynet, as configs/dds_baselines/resnext/X-50-32x4d_dds_8gpu.yaml with C=2,
# d=4: bottleneck widths 8 * 2^k = WIDTHS * BOT_MULS, GROUP_WS 4 * 2^k (2 groups).
_ANYNET = """
MODEL: {TYPE: anynet}
ANYNET:
  STEM_TYPE: res_stem_in
  STEM_W: 64
  BLOCK_TYPE: res_bottleneck_block
  DEPTHS: [3, 4, 6, 3]
  WIDTHS: [256, 512, 1024, 2048]
  STRIDES: [1, 2, 2, 2]
  BOT_MULS: [0.03125, 0.03125, 0.03125, 0.03125]
  GROUP_WS: [4, 8, 16, 32]
"""
# name -> (pycls config, where the stride is, what our notes say about it)
CONFIGS = {
    "resnet-stride-1x1": (_RESNET % "True", True, "MODEL.TYPE=resnet, RESNET.STRIDE_1X1=True"),
    "resnet-stride-3x3": (_RESNET % "False", False, "MODEL.TYPE=resnet, RESNET.STRIDE_1X1=False"),
    "anynet": (_ANYNET, False, "MODEL.TYPE=anynet"),
}


def pycls_model(config, seed=0):
    """pycls's own model for `config` (its global cfg), random weights and BN statistics."""
    reset_cfg()
    pycls_cfg.merge_from_other_cfg(CfgNode.load_cfg(_COMMON))
    pycls_cfg.merge_from_other_cfg(CfgNode.load_cfg(config))
    torch.manual_seed(seed)
    model = randomize_norms_(builders.build_model(), seed)
    with torch.no_grad():  # residual branches end small, as trained ResNets' do
        for name, param in model.named_parameters():
            if name.endswith("f.c_bn.weight"):
                param.mul_(0.1)
    return model.eval()


def stage_outputs(model, images):
    """pycls's s1..s4 outputs (as res2..res5) and logits, by forward hooks."""
    outputs = {}
    hooks = [getattr(model, f"s{i}").register_forward_hook(
        lambda m, i, o, name=name: outputs.__setitem__(name, o)) for i, name in enumerate(FEATURES, 1)]
    with torch.no_grad():
        logits = model(images)
    for hook in hooks:
        hook.remove()
    return outputs, logits


@pytest.fixture(params=list(CONFIGS))
def saved(request, tmp_path):
    """(config name, pycls model, checkpoint written by pycls's save_checkpoint)."""
    model = pycls_model(CONFIGS[request.param][0])
    pycls_cfg.OUT_DIR = str(tmp_path)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = checkpoint.save_checkpoint(model, optimizer, epoch=0)
    yield request.param, model, path
    reset_cfg()


def test_pycls_checkpoint_computes_what_pycls_computes(saved, images):
    name, model, path = saved
    _, stride, how = CONFIGS[name]
    assert set(torch.load(path, weights_only=False)) == {"epoch", "model_state", "optimizer_state",
                                                         "cfg"}
    result = convert_weights(path, keep_fc=True)
    meta = result.metadata
    assert (meta.source_format, meta.template, meta.stride_in_1x1) == ("pycls", TINY, stride)
    assert how in meta.notes and "model_state (no ema_state)" in meta.notes
    assert meta.input_format == "BGR" and meta.pixel_std == [57.375, 57.12, 58.395]
    expected, logits = stage_outputs(model, images)
    ours = ours_classifier(TINY, result.state_dict, num_classes=10, stride_in_1x1=stride)
    with torch.no_grad():
        assert max_rel_error(ours(images), logits) < 1e-5
        got = ours_backbone(TINY, result.state_dict, stride_in_1x1=stride)(images)
        wrong = ours_backbone(TINY, result.state_dict, stride_in_1x1=not stride)(images)
    assert set(expected) == set(FEATURES)
    assert max_rel_error(got, expected) < 1e-5
    assert max_rel_error(wrong, expected) > 1e-2  # the stride is visible


def _master_checkpoint(test_err, ema_err):
    """The dict pycls master's save_checkpoint writes (pycls/core/checkpoint.py)."""
    model, ema = pycls_model(_ANYNET, seed=0), pycls_model(_ANYNET, seed=1)
    ckpt = {"epoch": 99, "test_err": test_err, "ema_err": ema_err,
            "model_state": model.state_dict(), "ema_state": ema.state_dict(),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.0, "momentum": 0.9}]},
            "cfg": pycls_cfg.dump()}
    reset_cfg()
    return ckpt


@pytest.mark.parametrize("test_err, ema_err, chosen", [(23.5, 22.9, "ema_state"),
                                                       (22.9, 22.9, "model_state"),
                                                       (22.0, 22.9, "model_state")])
def test_the_state_pycls_would_load_is_converted(test_err, ema_err, chosen, tmp_path):
    """pycls's load_checkpoint: model_state if test_err <= ema_err, else ema_state."""
    ckpt = _master_checkpoint(test_err, ema_err)
    torch.save(ckpt, tmp_path / "model.pyth")
    result = convert_weights(tmp_path / "model.pyth")
    assert torch.equal(result.state_dict["res3.0.conv2.weight"], ckpt[chosen]["s2.b1.f.b.weight"])
    notes = result.metadata.notes
    assert f"converted {chosen} (test_err {test_err}, ema_err {ema_err})" in notes
    assert "MODEL.TYPE=anynet" in notes


@pytest.mark.parametrize("change, message", [
    ({"test_err": None}, "the pycls checkpoint's test_err is None, not a number"),
    ({"ema_err": "7.1"}, "the pycls checkpoint's ema_err is '7.1', not a number"),
    ({"ema_state": None, "ema_err": 1.0}, "its ema_state .* is NoneType, not a state dict"),
    ({"cfg": "MODEL: [unclosed"}, "the pycls checkpoint's cfg is not YAML"),
])
def test_damaged_pycls_fields_are_named(change, message, tmp_path):
    """Were bare TypeErrors (comparing None with a float; iterating a None ema_state) and a
    raw YAML parser error."""
    ckpt = {**_master_checkpoint(23.5, 22.9), **change}
    torch.save(ckpt, tmp_path / "model.pyth")
    with pytest.raises(ConversionError, match=message.replace("its ", "the pycls checkpoint's ")):
        convert_weights(tmp_path / "model.pyth")


@pytest.mark.parametrize("cfg_text", ["MODEL: 3", "RESNET: [1]\nMODEL: {TYPE: resnet}"])
def test_a_cfg_of_other_shapes_is_read_as_no_value(cfg_text, tmp_path):
    """`MODEL: 3` raised AttributeError ('int' object has no attribute 'get')."""
    ckpt = {**_master_checkpoint(22.0, 22.9), "cfg": cfg_text}
    torch.save(ckpt, tmp_path / "model.pyth")
    assert convert_weights(tmp_path / "model.pyth").metadata.source_format == "pycls"
