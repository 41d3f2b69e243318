"""Stride placement and input conventions: caught by the metadata, visible in outputs.

The pycls files here are pycls's own (pycls 0.1.1, the oracle, as in test_pycls.py): its
MODEL.TYPE resnet with bottleneck_transform and RESNET.STRIDE_1X1 left at pycls's default,
built by its builders.build_model and written by its checkpoint.save_checkpoint; the
converted weights must compute what pycls's forward computes."""
import pytest
import torch
import yaml
from detectron2.config import get_cfg

from ckpt_helpers import FEATURES, TINY, ours_backbone, ours_classifier
from resnext_det import add_resnext_config
from resnext_det.checkpoint import convert_weights
from resnext_det.checkpoint.sources.pycls import stride_in_1x1_from_cfg
from resnext_det.config.weights import apply_metadata, check_config
from resnext_det.utils.testing import max_rel_error

# pycls's MODEL.TYPE resnet as a ResNeXt (its default TRANS_FUN, basic_transform, cannot
# take groups); RESNET.STRIDE_1X1 not set: pycls's default decides.
PYCLS_RESNET_CFG = """
MODEL: {TYPE: resnet}
RESNET: {TRANS_FUN: bottleneck_transform, NUM_GROUPS: 2, WIDTH_PER_GROUP: 4}
"""


def _config(**resnets):
    cfg = add_resnext_config(get_cfg())
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def _pycls():
    """test_pycls.py's helpers around pycls itself (skips without pycls)."""
    pytest.importorskip("pycls", reason="the oracle: pip install --no-deps pycls==0.1.1")
    import test_pycls

    return test_pycls


def _pycls_file(tmp_path, cfg_change=None):
    """(pycls's model, the checkpoint pycls's save_checkpoint wrote for it); `cfg_change`
    edits the saved dict (e.g. drops a key of its "cfg") as another pycls version would."""
    oracle = _pycls()
    model = oracle.pycls_model(PYCLS_RESNET_CFG)
    try:
        oracle.pycls_cfg.OUT_DIR = str(tmp_path)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        path = oracle.checkpoint.save_checkpoint(model, optimizer, epoch=0)
    finally:
        oracle.reset_cfg()
    if cfg_change is not None:
        saved = torch.load(path, weights_only=False)
        cfg_change(saved)
        torch.save(saved, path)
    return model, path


def _without_stride_1x1(saved):
    cfg = yaml.safe_load(saved["cfg"])
    del cfg["RESNET"]["STRIDE_1X1"]
    saved["cfg"] = yaml.safe_dump(cfg)


def _check_outputs(model, state, stride, images):
    """Ours with `stride` computes pycls's logits and s1..s4; the other placement does not."""
    expected, logits = _pycls().stage_outputs(model, images)
    with torch.no_grad():
        right = ours_classifier(TINY, state, num_classes=10, stride_in_1x1=stride)(images)
        got = ours_backbone(TINY, state, stride_in_1x1=stride)(images)
        wrong = ours_backbone(TINY, state, stride_in_1x1=not stride)(images)
    assert set(expected) == set(FEATURES)
    assert max_rel_error(right, logits) < 1e-5
    assert max_rel_error(got, expected) < 1e-5
    assert max_rel_error(wrong, expected) > 1e-2  # same keys and shapes, different function


@pytest.mark.parametrize("cfg_change", [None, _without_stride_1x1], ids=["as-saved", "no-key"])
def test_pycls_resnet_type_means_stride_in_1x1(cfg_change, images, tmp_path):
    """pycls MODEL.TYPE resnet defaults RESNET.STRIDE_1X1 to True (MSRA). "no-key": a cfg
    without RESNET.STRIDE_1X1 is read with pycls's default."""
    oracle = _pycls()
    oracle.reset_cfg()
    default = oracle.pycls_cfg.RESNET.STRIDE_1X1
    assert default is True  # pycls/core/config.py _C.RESNET.STRIDE_1X1
    assert stride_in_1x1_from_cfg("MODEL: {TYPE: resnet}")[0] is default  # what we assume
    model, path = _pycls_file(tmp_path, cfg_change)
    assert model.s2.b1.f.a.stride == (2, 2) and model.s2.b1.f.b.stride == (1, 1)  # pycls's own
    result = convert_weights(path, keep_fc=True)
    meta = result.metadata
    assert (meta.source_format, meta.template, meta.stride_in_1x1) == ("pycls", TINY, default)
    assert "MODEL.TYPE=resnet, RESNET.STRIDE_1X1=True" in meta.notes
    _check_outputs(model, result.state_dict, default, images)


def test_wrong_stride_config_is_reported(tmp_path):
    """pycls's imagenet.py normalizes with _MEAN / _SD in BGR order (cv2.imread reads BGR):
    a BGR config raises no INPUT.FORMAT warning, detectron2's std 1 a PIXEL_STD one."""
    import inspect

    from pycls.datasets import imagenet

    _, path = _pycls_file(tmp_path)
    meta = convert_weights(path).metadata
    assert "cv2.imread" in inspect.getsource(imagenet.ImageNet.__getitem__)  # BGR
    assert meta.input_format == "BGR"
    assert meta.pixel_mean == pytest.approx([255 * m for m in imagenet._MEAN])
    assert meta.pixel_std == pytest.approx([255 * s for s in imagenet._SD])
    cfg = _config(STRIDE_IN_1X1=False)
    cfg.MODEL.RESNEXT.TEMPLATE = TINY
    assert cfg.INPUT.FORMAT == "BGR" and cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0]  # detectron2's
    warnings = check_config(cfg, meta)
    stride = [w for w in warnings if w.startswith("MODEL.RESNETS.STRIDE_IN_1X1=False")]
    assert len(stride) == 1 and "True" in stride[0]
    assert not any(w.startswith("INPUT.FORMAT=") for w in warnings)  # pycls feeds BGR too
    assert any(w.startswith("MODEL.PIXEL_STD=") for w in warnings)


def test_stride_override_wins(images, tmp_path):
    """A pycls file without its cfg is read as the model zoo's anynet (stride in the 3x3);
    for pycls's resnet (stride in the 1x1) the override gives what pycls computes."""
    model, path = _pycls_file(tmp_path, lambda saved: saved.pop("cfg"))
    assert convert_weights(path).metadata.stride_in_1x1 is False  # model zoo default
    result = convert_weights(path, keep_fc=True, overrides={"stride_in_1x1": True})
    assert result.metadata.stride_in_1x1 is True
    _check_outputs(model, result.state_dict, True, images)


def test_apply_metadata_then_no_warning(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnext50_32x4d().state_dict(), tmp_path / "x.pth")
    meta = convert_weights(tmp_path / "x.pth").metadata
    cfg = _config()
    warnings = check_config(cfg, meta)
    for key in ("MODEL.RESNETS.STRIDE_IN_1X1=True", "INPUT.FORMAT='BGR'", "MODEL.PIXEL_STD=",
                "MODEL.RESNETS.NUM_GROUPS=1", "MODEL.RESNETS.WIDTH_PER_GROUP=64"):
        assert any(w.startswith(key) for w in warnings), (key, warnings)
    changed = dict((k, new) for k, _, new in apply_metadata(cfg, meta))
    assert changed["INPUT.FORMAT"] == "RGB" and changed["MODEL.RESNEXT.TEMPLATE"] == "X50_32x4d"
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
    assert check_config(cfg, meta) == []


def test_unknown_conventions_leave_the_config_and_norms_are_compared_by_family():
    """Metadata with None conventions (our naming without metadata) changes no key but the
    template's; a BN-trained file warns under GN, not under FrozenBN or SyncBN."""
    from resnext_det.checkpoint.metadata import WeightsMetadata

    meta = WeightsMetadata(template=TINY, source_format="resnext_det", norm="BN")
    cfg = _config()
    before = cfg.clone()
    changed = {key for key, _, _ in apply_metadata(cfg, meta)}
    assert changed == {"MODEL.RESNEXT.TEMPLATE", "MODEL.RESNETS.NUM_GROUPS",
                       "MODEL.RESNETS.WIDTH_PER_GROUP"}  # X50_2x4d: depth 50 as before
    cfg.MODEL.RESNEXT.TEMPLATE = before.MODEL.RESNEXT.TEMPLATE
    for key in ("NUM_GROUPS", "WIDTH_PER_GROUP"):
        cfg.MODEL.RESNETS[key] = before.MODEL.RESNETS[key]
    assert cfg == before  # stride, input format, pixel stats and block form untouched
    for norm, warned in (("FrozenBN", False), ("SyncBN", False), ("GN", True)):
        cfg = _config(NORM=norm)
        cfg.MODEL.RESNEXT.TEMPLATE = TINY
        lines = check_config(cfg, meta, log=False)
        assert [w for w in lines if w.startswith("MODEL.RESNETS.NORM=")] == (
            [f"MODEL.RESNETS.NORM={norm!r} but the resnext_det weights ({TINY}) were trained "
             "with 'BN'"] if warned else []), (norm, lines)
