"""Bad weights files, as a user meets them: each is one clear error naming the file.

Covers issue 14's classes 1 (code in a weights file), 3 (wrong weights would train
silently) and 6 (unclear messages): crafted pickles and torch files whose payload would
create a file, a densenet state dict, a ResNeXt-101 file in a ResNeXt-50 model,
truncated / empty / random / folder / strings-only files.
"""
import argparse
import io
import os
import pickle
import time

import pytest
import torch
import torchvision
from detectron2.modeling import build_model

from resnext_det import resnext_classifier
from resnext_det.checkpoint import (ConversionError, ResNeXtCheckpointer, UnreadableFileError,
                                    WeightsFileError, WeightsMismatchError, convert_weights,
                                    load_weights)
from resnext_det.checkpoint import readers
from tests.helpers import make_cfg

TINY = "X50_2x4d"


class Payload:
    """Unpickling this calls os.system: it would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_c4(template=TINY):
    """A C4 Faster R-CNN: ResNeXt keys in the backbone (stem..res4) and the ROI head (res5)."""
    cfg = make_cfg("MODEL.RESNEXT.TEMPLATE", template, "MODEL.RESNETS.OUT_FEATURES", ["res4"],
                   "MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads")
    return build_model(cfg)


@pytest.fixture(scope="module")
def tiny_state():
    return {k: v for k, v in resnext_classifier(TINY, num_classes=10).state_dict().items()}


@pytest.mark.parametrize("suffix", [".pkl", ".pth-legacy", ".pth"])
def test_a_crafted_file_runs_no_code(suffix, tmp_path, tiny_state):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix.split('-')[0]}"
    payload = dict(tiny_state, **{"res2.0.conv1.weight": Payload(marker)})
    if suffix == ".pkl":  # our .pkl layout: numpy arrays
        arrays = {k: v if isinstance(v, Payload) else v.numpy() for k, v in payload.items()}
        path.write_bytes(pickle.dumps({"model": arrays, "__author__": "resnext_det"}))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=suffix == ".pth")
    for load in (convert_weights, load_weights,
                 lambda p: ResNeXtCheckpointer(_tiny_c4()).load(str(p)),
                 lambda p: ResNeXtCheckpointer(resnext_classifier(TINY, num_classes=10),
                                               convert_kwargs={"keep_fc": True}).load(str(p))):
        with pytest.raises(WeightsFileError, match=r"evil\.p.*(os\.system|posix\.system|GLOBAL)") as err:
            load(path)
        assert "WEIGHTS_TRUST_PICKLE" in str(err.value)
        assert "weights_only=False" not in str(err.value)  # torch's advice is not repeated
    assert not marker.exists()


def test_trust_pickle_is_an_explicit_opt_in(tmp_path, tiny_state, caplog):
    """A file that holds a harmless object beside the weights loads only when trusted."""
    path = tmp_path / "with_namespace.pth"
    torch.save({"model": tiny_state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(WeightsFileError, match="Namespace"):
        convert_weights(path)
    with caplog.at_level("WARNING"):
        result = convert_weights(path, trust_pickle=True)
    assert result.metadata.template == TINY
    assert "WEIGHTS_TRUST_PICKLE" in caplog.text


def test_densenet_weights_are_not_handed_to_a_lenient_loader(tmp_path):
    path = tmp_path / "densenet121.pth"
    torch.save(torchvision.models.densenet121().state_dict(), path)
    with pytest.raises(ConversionError, match=r"densenet121\.pth: not a ResNet/ResNeXt layout") as err:
        ResNeXtCheckpointer(_tiny_c4()).load(str(path))
    assert "features.conv0.weight" in str(err.value)  # first keys, with shapes
    assert "torchvision:" in str(err.value)  # the layouts we know


def test_a_deeper_resnext_in_a_shallower_model_is_an_error(tmp_path):
    path = tmp_path / "x101.pth"
    torch.save(resnext_classifier("X101_2x4d", num_classes=10).state_dict(), path)
    with pytest.raises(WeightsMismatchError, match=r"x101\.pth: its ResNeXt weights do not fit") as err:
        ResNeXtCheckpointer(_tiny_c4()).load(str(path))
    assert "file blocks with no place in the model: res4.6, res4.7, res4.8, res4.9, ..., " \
           "res4.20, res4.21, res4.22" in str(err.value)
    assert "WEIGHTS_ALLOW_PARTIAL" in str(err.value)


def test_a_wider_resnext_names_both_shapes_and_partial_loading_is_opt_in(tmp_path, caplog):
    path = tmp_path / "x50_4x4d.pth"
    torch.save(resnext_classifier("X50_4x4d", num_classes=10).state_dict(), path)
    with pytest.raises(WeightsMismatchError, match=r"file shape \(\d+, \d+, 1, 1\), model shape"):
        ResNeXtCheckpointer(_tiny_c4()).load(str(path))
    model = _tiny_c4()
    narrow_before = model.backbone.res2[0].conv1.weight.clone()
    with caplog.at_level("WARNING"):
        ResNeXtCheckpointer(model, allow_partial=True).load(str(path))
    assert "WEIGHTS_ALLOW_PARTIAL: not loaded" in caplog.text
    file_state = torch.load(path, map_location="cpu")
    # what fits is the file's: the stem and the shortcuts (widths do not enter them) ...
    assert torch.equal(model.backbone.stem.conv1.weight, file_state["stem.conv1.weight"])
    assert torch.equal(model.backbone.res3[0].shortcut.weight,
                       file_state["res3.0.shortcut.weight"])
    # ... and what does not fit (4x4d: 16 channels, 2x4d: 8) keeps the model's own
    assert file_state["res2.0.conv1.weight"].shape != narrow_before.shape
    assert torch.equal(model.backbone.res2[0].conv1.weight, narrow_before)


def _truncated(path, tmp_path):
    data = path.read_bytes()
    out = tmp_path / f"truncated_{path.name}"
    out.write_bytes(data[: len(data) // 2])
    return out


def test_truncated_files_say_so(tmp_path, tiny_state):
    from safetensors.torch import save_file

    pth = tmp_path / "w.pth"
    torch.save(tiny_state, pth)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(st))
    pkl = tmp_path / "w.pkl"
    pkl.write_bytes(pickle.dumps({k: v.numpy() for k, v in tiny_state.items()}))
    for path, what in ((pth, "torch file"), (st, "safetensors file"), (pkl, "pickle")):
        bad = _truncated(path, tmp_path)
        with pytest.raises(UnreadableFileError, match=rf"truncated_w\.\w+: a truncated or damaged {what}"):
            convert_weights(bad)


@pytest.mark.parametrize("legacy", [True, False])
def test_every_cut_and_flipped_byte_of_a_torch_file_is_a_clear_error(tmp_path, legacy):
    """Swept over every cut length and every flipped byte of a small file: what torch.load
    raises for them (struct.error, IndexError, KeyError, OverflowError, a "GLOBAL" refusal of
    a name cut short, ...) is always UnreadableFileError naming the file, never a raw error
    or the advice to trust the file's code."""
    buffer = io.BytesIO()
    torch.save({"a": torch.arange(10.0), "b": torch.ones(3)}, buffer,
               _use_new_zipfile_serialization=not legacy)
    data = buffer.getvalue()
    container = "torch-legacy" if legacy else "torch-zip"
    variants = [data[:n] for n in range(1, len(data))]
    variants += [data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:] for i in range(len(data))]
    outcomes = set()
    for variant in variants:
        try:
            readers._LOADERS[container](variant, "w.pth", False)
            outcomes.add("read")  # a flip in a tensor's values or in padding
        except UnreadableFileError as e:
            assert str(e).startswith("w.pth: a truncated or damaged torch file"), str(e)
            outcomes.add("unreadable")
    assert outcomes <= {"read", "unreadable"} and "unreadable" in outcomes


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty \(0 bytes\)"),
    (os.urandom(256).replace(b"\x80", b"\x00").replace(b"PK", b"pk"), "not a weights file"),
    (b"<!DOCTYPE html><html>Not found</html>" * 4, "looks like an HTML page"),
])
def test_empty_random_and_html_files(content, message, tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(UnreadableFileError, match=rf"weights\.pth: .*{message}"):
        convert_weights(path)


def test_a_folder_and_a_dict_of_strings(tmp_path):
    with pytest.raises(WeightsFileError, match="is a folder, not a weights file"):
        convert_weights(tmp_path)
    path = tmp_path / "strings.pth"
    torch.save({"conv1.weight": "not a tensor", "layer1.0.conv1.weight": "nor this"}, path)
    with pytest.raises(ConversionError, match=r"strings\.pth: 2 of its 2 entries are not arrays"):
        convert_weights(path)
    torch.save({}, tmp_path / "empty.pth")  # was: "First keys (shape):" and nothing after
    with pytest.raises(ConversionError, match=r"empty\.pth: holds no weights"):
        convert_weights(tmp_path / "empty.pth")


@pytest.mark.parametrize("damage, message", [
    (lambda w: w.fill_(float("nan")), r"'layer1.0.conv2.weight' holds \d+ NaN or infinite values"),
    (lambda w: w.to(torch.complex64), "'layer1.0.conv2.weight' holds torch.complex64 values"),
    (lambda w: w.to(torch.int64), "'layer1.0.conv2.weight' holds torch.int64 values, not real"),
    (lambda w: w.numpy().astype(object), "'layer1.0.conv2.weight' holds object values"),
    (lambda w: w[:, :0], r"'layer1.0.conv2.weight' holds no values \(shape \(128, 0, 3, 3\)\)"),
])
def test_weights_that_are_not_finite_real_numbers_are_refused(damage, message, tmp_path):
    """torchvision's own ResNeXt with one damaged tensor: a diverged run's NaN, complex,
    integer or Python objects. Converting gave a file of them (exit 0; object arrays: a bare
    TypeError), and a detector loading them predicted nothing, without a word."""
    state = torchvision.models.resnext50_32x4d().state_dict()
    state["layer1.0.conv2.weight"] = damage(state["layer1.0.conv2.weight"])
    path = tmp_path / "damaged.pkl"  # a pickle: object arrays cannot go in a torch file
    with open(path, "wb") as f:
        pickle.dump({k: v.numpy() if isinstance(v, torch.Tensor) else v
                     for k, v in state.items()}, f)
    with pytest.raises(UnreadableFileError, match=f"{path}: {message}"):
        convert_weights(str(path))


def test_a_negative_running_variance_is_refused(tmp_path):
    """torchvision's ResNeXt with one BN variance below 0 converted (exit 0), and the
    detector's FrozenBN took its square root: NaN outputs."""
    state = torchvision.models.resnext50_32x4d().state_dict()
    state["layer2.0.bn1.running_var"][3] = -0.5
    path = tmp_path / "negative.pth"
    torch.save(state, path)
    with pytest.raises(UnreadableFileError, match=r"'layer2.0.bn1.running_var' holds 1 negative"):
        convert_weights(str(path))


def test_a_detector_checkpoint_with_nan_is_refused_and_resume_takes_an_older_one(tmp_path,
                                                                                   caplog):
    model = _tiny_c4()
    checkpointer = ResNeXtCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    weight = model.backbone.res2[0].conv1.weight
    with torch.no_grad():
        weight[0, 0, 0, 0] = float("inf")
    time.sleep(0.01)  # distinct modification times
    checkpointer.save("model_0000002")  # the training diverged after its first checkpoint
    with pytest.raises(UnreadableFileError, match=r"'backbone.res2.0.conv1.weight' holds 1 NaN "
                                                  r"or infinite values .* diverged"):
        ResNeXtCheckpointer(_tiny_c4()).load(str(tmp_path / "model_0000002.pth"))
    resumed = _tiny_c4()
    with caplog.at_level("WARNING"):
        ResNeXtCheckpointer(resumed, str(tmp_path)).resume_or_load("", resume=True)
    assert "Cannot resume from" in caplog.text and "model_0000002.pth" in caplog.text
    older = torch.load(tmp_path / "model_0000001.pth", map_location="cpu")["model"]
    assert torch.isfinite(older["backbone.res2.0.conv1.weight"]).all()
    resumed_state = resumed.state_dict()
    assert resumed_state.keys() == older.keys()
    for name, value in older.items():  # every tensor is the older checkpoint's
        assert torch.equal(resumed_state[name], value), name
