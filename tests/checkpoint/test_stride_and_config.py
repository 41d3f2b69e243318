"""Stride placement and input conventions: caught by the metadata, visible in outputs."""
import torch
from detectron2.config import get_cfg

from ckpt_helpers import TINY, ours_classifier, to_pycls
from resnext_det import add_resnext_config
from resnext_det.checkpoint import convert_weights
from resnext_det.config.weights import apply_metadata, check_config
from resnext_det.utils.testing import max_rel_error

PYCLS_RESNET_CFG = "MODEL:\n  TYPE: resnet\n  DEPTH: 50\nRESNET:\n  NUM_GROUPS: 2\n"


def _config(**resnets):
    cfg = add_resnext_config(get_cfg())
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def _pycls_file(tmp_path, model, cfg_text):
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet_type.pyth"
    torch.save({"model_state": to_pycls(state), "cfg": cfg_text}, path)
    return path


def test_pycls_resnet_type_means_stride_in_1x1(tiny_model_stride_1x1, images, tmp_path):
    """pycls MODEL.TYPE resnet defaults RESNET.STRIDE_1X1 to True (MSRA)."""
    path = _pycls_file(tmp_path, tiny_model_stride_1x1, PYCLS_RESNET_CFG)
    result = convert_weights(path, keep_fc=True)
    assert result.metadata.stride_in_1x1 is True
    with torch.no_grad():
        expected = tiny_model_stride_1x1(images)
        right = ours_classifier(TINY, result.state_dict, num_classes=10, stride_in_1x1=True)(images)
        wrong = ours_classifier(TINY, result.state_dict, num_classes=10, stride_in_1x1=False)(images)
    assert max_rel_error(right, expected) < 1e-5
    assert max_rel_error(wrong, expected) > 1e-2  # same keys and shapes, different function


def test_wrong_stride_config_is_reported(tiny_model_stride_1x1, tmp_path):
    path = _pycls_file(tmp_path, tiny_model_stride_1x1, PYCLS_RESNET_CFG)
    meta = convert_weights(path).metadata
    cfg = _config(STRIDE_IN_1X1=False)
    cfg.MODEL.RESNEXT.TEMPLATE = TINY
    warnings = check_config(cfg, meta)
    stride = [w for w in warnings if w.startswith("MODEL.RESNETS.STRIDE_IN_1X1=False")]
    assert len(stride) == 1 and "True" in stride[0]
    assert not any(w.startswith("INPUT.FORMAT=") for w in warnings)  # pycls feeds BGR too
    assert any(w.startswith("MODEL.PIXEL_STD=") for w in warnings)


def test_stride_override_wins(tiny_model_stride_1x1, tmp_path):
    path = _pycls_file(tmp_path, tiny_model_stride_1x1, "")
    assert convert_weights(path).metadata.stride_in_1x1 is False  # model zoo default
    meta = convert_weights(path, overrides={"stride_in_1x1": True}).metadata
    assert meta.stride_in_1x1 is True


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
