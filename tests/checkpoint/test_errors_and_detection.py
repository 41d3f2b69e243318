"""Conversion never guesses: errors name keys; content decides the format; C4/FPN/RetinaNet load."""
import pickle
import shutil

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from ckpt_helpers import FEATURES, TINY, ours_backbone, to_caffe2_blobs
from resnext_det import add_resnext_config
from resnext_det.utils.testing import max_rel_error, randomize_norms_
from resnext_det.checkpoint import (ConversionError, KeyMismatchError, ResNeXtCheckpointer,
                                    convert_weights, save_converted, sniff_container)


@pytest.fixture(scope="module")
def tv_state():
    torch.manual_seed(0)
    return torchvision.models.resnext50_32x4d().state_dict()


def _save(state, path):
    torch.save(state, path)
    return path


def test_missing_key_is_named(tv_state, tmp_path):
    state = {k: v for k, v in tv_state.items() if k != "layer3.2.bn2.running_var"}
    with pytest.raises(KeyMismatchError, match=r"missing key 'res4\.2\.conv2\.norm\.running_var'"):
        convert_weights(_save(state, tmp_path / "m.pth"))


def test_unmatched_key_is_named(tv_state, tmp_path):
    state = dict(tv_state, **{"layer2.0.se.fc1.weight": torch.zeros(8, 512)})
    with pytest.raises(KeyMismatchError, match=r"unmatched source key 'layer2\.0\.se\.fc1\.weight'"):
        convert_weights(_save(state, tmp_path / "u.pth"))


def test_shape_mismatch_names_both_shapes(tv_state, tmp_path):
    state = dict(tv_state, **{"layer1.1.conv1.weight": torch.zeros(128, 256, 3, 3)})
    with pytest.raises(KeyMismatchError) as err:
        convert_weights(_save(state, tmp_path / "s.pth"))
    assert "'res2.1.conv1.weight': checkpoint (128, 256, 3, 3), model (128, 256, 1, 1)" in str(err.value)


def test_allow_partial_lists_every_skipped_key(tv_state, tmp_path):
    """A missing projection, a missing statistic and an unknown key: each listed once with
    its reason (missing keys by our name, the unknown one by the file's), none loaded,
    everything else kept."""
    removed = [k for k in tv_state if k.startswith("layer4.0.downsample.")
               and not k.endswith("num_batches_tracked")] + ["layer3.2.bn2.running_var"]
    assert len(removed) == 6  # the 1x1 projection's weight and its BN's four tensors; one var
    state = {k: v for k, v in tv_state.items() if k not in removed}
    state["extra.weight"] = torch.zeros(1)
    result = convert_weights(_save(state, tmp_path / "p.pth"), allow_partial=True)
    ours = [f"res5.0.shortcut.{p}" for p in ("weight", "norm.weight", "norm.bias",
                                             "norm.running_mean", "norm.running_var")]
    ours.append("res4.2.conv2.norm.running_var")
    expected = [f"missing key {k!r}" for k in ours] + ["unmatched source key 'extra.weight'"]
    for line in expected:
        assert sum(s.startswith(line) for s in result.report.skipped) == 1, line
    assert len(result.report.skipped) == len(expected)  # nothing else skipped
    assert not set(ours) & set(result.state_dict) and "extra.weight" not in result.state_dict
    assert {"res5.2.conv1.weight", "res4.2.conv2.norm.weight"} <= set(result.state_dict)


def test_the_checkpointer_passes_allow_partial_to_the_conversion(tv_state, tmp_path, caplog):
    """WEIGHTS_ALLOW_PARTIAL reached detectron2's key matching only: a torchvision file with
    one statistic missing stopped in the conversion whatever the key said."""
    from resnext_det import resnext_classifier

    state = {k: v for k, v in tv_state.items() if k != "layer3.2.bn2.running_var"}
    path = _save(state, tmp_path / "m.pth")
    model = resnext_classifier("X50_32x4d", num_classes=1000)
    before = model.res4[2].conv2.norm.running_var.clone()
    with pytest.raises(KeyMismatchError):
        ResNeXtCheckpointer(model, str(tmp_path / "strict")).load(str(path))
    with caplog.at_level("WARNING"):
        ResNeXtCheckpointer(model, str(tmp_path / "partial"), allow_partial=True).load(str(path))
    assert torch.equal(model.res4[2].conv2.norm.running_var, before)  # left as it was
    assert torch.equal(model.res4[2].conv2.norm.running_mean, tv_state["layer3.2.bn2.running_mean"])
    assert "res4.2.conv2.norm.running_var" in caplog.text


@pytest.mark.parametrize("form", ["a", "b", "c"])
def test_a_model_of_form_a_or_b_loads_foreign_weights(tv_state, tmp_path, form):
    """MODEL.RESNEXT.BLOCK_FORM a / b: torchvision's (grouped) weights, regrouped as the
    model's C paths, compute torchvision's outputs."""
    from resnext_det import resnext_classifier

    torch.manual_seed(0)
    reference = torchvision.models.resnext50_32x4d().eval()
    path = _save(reference.state_dict(), tmp_path / "tv.pth")
    model = resnext_classifier("X50_32x4d", num_classes=1000, block_form=form).eval()
    ResNeXtCheckpointer(model, str(tmp_path / form), block_form=form,
                        convert_kwargs={"keep_fc": True}).load(str(path))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_rel_error(model(image), reference(image)) < 1e-4


def test_unknown_format_is_an_error(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not weights at all")
    with pytest.raises(ConversionError, match="junk.pth: not a weights file"):
        convert_weights(tmp_path / "junk.pth")


def test_format_is_read_from_content(tv_state, tiny_state, tmp_path):
    """A torch zip named .pkl and a Caffe2 pickle named .pth still convert."""
    tv = _save(tv_state, tmp_path / "really_torchvision.pkl")
    assert sniff_container(tv) == "torch-zip"
    assert convert_weights(tv).metadata.source_format == "torchvision"
    c2 = tmp_path / "really_caffe2.pth"
    c2.write_bytes(pickle.dumps(to_caffe2_blobs(tiny_state)))
    assert sniff_container(c2) == "pickle"
    assert convert_weights(c2).metadata.source_format == "caffe2"


DETECTORS = {
    "C4": dict(BACKBONE="build_resnext_backbone", ROI="ResNeXtRes5ROIHeads", OUT=["res4"]),
    "FPN": dict(BACKBONE="build_resnext_fpn_backbone", ROI="StandardROIHeads",
                OUT=["res2", "res3", "res4", "res5"]),
    "RetinaNet": dict(BACKBONE="build_retinanet_resnext_fpn_backbone", ROI=None,
                      OUT=["res3", "res4", "res5"]),
}
BACKBONE_PREFIXES = ("backbone.stem", "backbone.res", "backbone.bottom_up.", "roi_heads.res5.")


def _detector(kind, template):
    spec, cfg = DETECTORS[kind], add_resnext_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNEXT.TEMPLATE = template
    cfg.MODEL.BACKBONE.NAME = spec["BACKBONE"]
    cfg.MODEL.RESNETS.OUT_FEATURES = spec["OUT"]
    if kind == "C4":
        cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.ROI_HEADS.IN_FEATURES = spec["ROI"], ["res4"]
        cfg.MODEL.RPN.IN_FEATURES = ["res4"]
    elif kind == "FPN":
        cfg.MODEL.ROI_HEADS.NAME = spec["ROI"]
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        cfg.MODEL.ROI_BOX_HEAD.NAME, cfg.MODEL.ROI_BOX_HEAD.NUM_FC = "FastRCNNConvFCHead", 2
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    else:
        cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
        cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    return cfg, build_model(cfg)


@pytest.fixture(scope="module")
def tiny_pkl(tmp_path_factory, tiny_state):
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(tiny_state, path)
    return save_converted(convert_weights(path), path.with_suffix(".pkl"))


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_converted_pkl_loads_into_detectors(kind, tiny_pkl):
    cfg, model = _detector(kind, TINY)
    checkpointer = ResNeXtCheckpointer(model)
    checkpointer.load(str(tiny_pkl))
    bad = checkpointer.last_incompatible
    assert not bad.unexpected_keys and not bad.incorrect_shapes
    assert not [k for k in bad.missing_keys if k.startswith(BACKBONE_PREFIXES)]
    stem = dict(model.named_parameters()).get("backbone.stem.conv1.weight",
                dict(model.named_parameters()).get("backbone.bottom_up.stem.conv1.weight"))
    assert stem is not None and torch.equal(stem, torch.as_tensor(
        pickle.load(open(tiny_pkl, "rb"))["model"]["stem.conv1.weight"]))


def test_weights_pointing_at_a_foreign_file_are_converted_once(tiny_state, tmp_path, monkeypatch):
    src = tmp_path / "X-50-2x4d.pkl"
    src.write_bytes(pickle.dumps({"blobs": to_caffe2_blobs(tiny_state)}))
    cfg, model = _detector("FPN", TINY)
    ResNeXtCheckpointer(model, str(tmp_path / "out")).load(str(src))
    cached = list((tmp_path / "out" / "converted_weights").glob("X-50-2x4d-*.pkl"))
    assert len(cached) == 1
    import resnext_det.checkpoint.loading as module

    monkeypatch.setattr(module, "convert_weights", lambda *a, **k: pytest.fail("re-converted"))
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path / "out"))
    checkpointer.load(str(src))
    assert not [k for k in checkpointer.last_incompatible.missing_keys
                if k.startswith(BACKBONE_PREFIXES)]
    shutil.rmtree(tmp_path / "out")


def test_a_conversion_cached_by_other_converter_code_is_not_reused(tiny_state, tmp_path, monkeypatch):
    """The cache entry was named by the source file's bytes alone: a conversion made by an
    older (wrong) converter was loaded for ever after the converter was fixed."""
    import resnext_det.checkpoint.loading as module

    src = tmp_path / "X-50-2x4d.pkl"
    src.write_bytes(pickle.dumps({"blobs": to_caffe2_blobs(tiny_state)}))
    cfg, model = _detector("FPN", TINY)
    ResNeXtCheckpointer(model, str(tmp_path / "out")).load(str(src))
    [old] = (tmp_path / "out" / "converted_weights").glob("X-50-2x4d-*.pkl")
    wrong = pickle.load(open(old, "rb"))  # what a wrong converter would have written
    wrong["model"]["stem.conv1.weight"] = wrong["model"]["stem.conv1.weight"] * 0
    old.write_bytes(pickle.dumps(wrong))
    monkeypatch.setattr(module, "converter_fingerprint", lambda: "0ther0de")  # the fixed release
    cfg, model = _detector("FPN", TINY)
    ResNeXtCheckpointer(model, str(tmp_path / "out")).load(str(src))
    stem = model.backbone.bottom_up.stem.conv1.weight
    assert stem.abs().sum() > 0 and torch.equal(stem, torch.as_tensor(tiny_state["stem.conv1.weight"]))
    assert len(list((tmp_path / "out" / "converted_weights").glob("X-50-2x4d-*.pkl"))) == 2


def test_odd_contents_are_conversion_errors_naming_the_file(tmp_path):
    """Each was a raw AttributeError (a key that is not a string, a .t7 holding a bare
    tensor) or fvcore's AssertionError (a missing file, a folder, through the checkpointer)."""
    import numpy as np
    from t7_writer import write_t7
    from resnext_det.checkpoint import UnreadableFileError, WeightsFileError, load_weights

    pickle.dump({"conv.weight": np.zeros((2, 2), np.float32), 5: np.zeros(2, np.float32)},
                open(tmp_path / "intkey.pkl", "wb"))
    with pytest.raises(ConversionError, match=r"intkey\.pkl: 1 of its 2 keys are not names \(5\)"):
        load_weights(str(tmp_path / "intkey.pkl"))
    write_t7(tmp_path / "tensor.t7", np.zeros((2, 3), np.float32))
    with pytest.raises(ConversionError, match=r"tensor\.t7: a Torch7 file holding a ndarray"):
        load_weights(str(tmp_path / "tensor.t7"))
    checkpointer = ResNeXtCheckpointer(torch.nn.Conv2d(3, 4, 1), str(tmp_path / "out"))
    with pytest.raises(UnreadableFileError, match=r"nope\.pth: no such file"):
        checkpointer.load(str(tmp_path / "nope.pth"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(WeightsFileError, match=r"folder: is a folder"):
        checkpointer.load(str(tmp_path / "folder"))


def test_a_cache_that_cannot_be_written_is_not_an_error(tv_state, tmp_path, caplog):
    """The conversion is in memory; the cache only saves the next run's time."""
    (tmp_path / "blocked").write_text("a file where the cache folder would go")
    from resnext_det import resnext_classifier

    model = resnext_classifier("X50_32x4d", num_classes=1000)
    path = _save(tv_state, tmp_path / "tv.pth")
    with caplog.at_level("WARNING"):
        ResNeXtCheckpointer(model, str(tmp_path), cache_dir=str(tmp_path / "blocked" / "cache"),
                            convert_kwargs={"keep_fc": True}).load(str(path))
    assert "Cannot cache the conversion" in caplog.text
    assert torch.equal(model.linear.weight, tv_state["fc.weight"])


def test_a_detectron2_fpn_detectors_checkpoint_converts_to_its_backbone(tmp_path, images):
    """detectron2's own ResNeXt FPN Faster R-CNN (build_resnet_fpn_backbone, weights under
    backbone.bottom_up.), saved by its DetectionCheckpointer: the conversion holds its
    bottom-up ResNeXt, and our backbone loaded with it computes detectron2's res2..res5."""
    from detectron2.checkpoint import DetectionCheckpointer

    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.MODEL.BACKBONE.NAME = "cpu", "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 2, 4
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 256, "BN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = FEATURES
    cfg.MODEL.FPN.IN_FEATURES, cfg.MODEL.FPN.OUT_CHANNELS = FEATURES, 16
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.ROI_BOX_HEAD.NAME = "StandardROIHeads", "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    torch.manual_seed(0)
    detector = randomize_norms_(build_model(cfg)).eval()
    DetectionCheckpointer(detector, save_dir=str(tmp_path)).save("d2_fpn")
    result = convert_weights(tmp_path / "d2_fpn.pth")
    assert result.metadata.template == TINY
    bottom_up = detector.backbone.bottom_up
    with torch.no_grad():
        want = bottom_up(images)
        got = ours_backbone(TINY, result.state_dict, norm="BN").eval()(images)
    for name in FEATURES:
        assert max_rel_error(got[name], want[name]) < 1e-5, name
