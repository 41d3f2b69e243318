"""Folder and CIFAR datasets: bad images named by path, empty folders named by path."""
import io
import logging
import pickle
import struct

import numpy as np
import pytest
import torch

from resnext_det.classification import main
from resnext_det.data.classification import (BadImageError, CifarDataset, DatasetError,
                                             FolderDataset)

from .helpers import cls_args, tiny_opts, write_folder


def _with_bad_images(root):
    folder = write_folder(root)
    good = folder / "train" / "red" / "0.png"
    truncated = folder / "train" / "red" / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    garbage = folder / "train" / "green" / "garbage.JPEG"
    garbage.write_bytes(b"not an image at all")
    return folder, truncated, garbage


def test_bad_images_skipped_with_their_paths(tmp_path, caplog):
    folder, truncated, garbage = _with_bad_images(tmp_path)
    dataset = FolderDataset(str(folder / "train"), on_bad_image="skip")
    assert len(dataset) == 20
    with caplog.at_level(logging.WARNING):
        images = [dataset[i] for i in range(len(dataset))]
    assert all(image.size == (16, 16) for image, _ in images)
    assert str(truncated) in caplog.text and str(garbage) in caplog.text


def test_bad_image_error_names_the_path(tmp_path):
    folder, truncated, _ = _with_bad_images(tmp_path)
    dataset = FolderDataset(str(folder / "train"), on_bad_image="error")
    index = [path for path, _ in dataset.samples].index(str(truncated))
    with pytest.raises(BadImageError, match=str(truncated)):
        dataset[index]


def test_training_with_bad_images(tmp_path):
    """The whole run: 'skip' trains through them, 'error' stops naming the file."""
    folder, _, _ = _with_bad_images(tmp_path / "data")
    opts = tiny_opts(folder, tmp_path / "skip", "SOLVER.MAX_ITER", 5)
    assert main(cls_args(opts))["images"] == 6
    opts = tiny_opts(folder, tmp_path / "error", "DATA.ON_BAD_IMAGE", "error",
                     "SOLVER.MAX_EPOCHS", 1)
    with pytest.raises(BadImageError, match=f"{folder}/train/.*: cannot read image"):
        main(cls_args(opts))


def test_a_bad_validation_image_is_left_out_of_the_metrics(tmp_path):
    """'skip' used the next image, so a validation image was counted twice in top-1."""
    from resnext_det.classification.trainer import build_model_for, evaluate
    from resnext_det.classification.transforms import build_test_transform
    from resnext_det.data.classification import build_dataset, read_image

    from .helpers import tiny_cfg

    folder = write_folder(tmp_path, per_class=(2, 3))
    good = sorted((folder / "val").rglob("*.png"))
    (folder / "val" / "blue" / "bad.png").write_bytes(b"not an image")
    cfg = tiny_cfg(folder, tmp_path / "out")
    dataset = build_dataset(cfg, False, build_test_transform(cfg))
    torch.manual_seed(0)
    model = build_model_for(cfg, dataset).eval()
    result = evaluate(cfg, model, dataset)
    assert (result["images"], result["skipped"]) == (len(good), 1)
    transform = build_test_transform(cfg)  # the reference: each good file once, by hand
    with torch.no_grad():
        logits = model(torch.stack([transform(read_image(path)) for path in good]))
    labels = torch.tensor([dataset.class_to_idx[path.parent.name] for path in good])
    wrong = int((logits.argmax(1) != labels).sum())
    assert result["top1_err"] == pytest.approx(100 * wrong / len(good))


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path}/missing: no such folder"):
        FolderDataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=f"{tmp_path}/empty: no class folders found"):
        FolderDataset(str(tmp_path / "empty"))
    for name in ("cat", "dog"):
        (tmp_path / "none" / name).mkdir(parents=True)
        (tmp_path / "none" / name / "notes.txt").write_text("no image")
    with pytest.raises(DatasetError, match=f"{tmp_path}/none: .*no valid file for the classes cat"):
        FolderDataset(str(tmp_path / "none"))


def test_one_class_and_folders_reached_twice_are_errors(tmp_path):
    """One class trained to loss 0 and 0% error; a link to a folder above (train/red/up ->
    ..) made 18 images into thousands, each labelled by the first folder of its path."""
    folder = write_folder(tmp_path / "data")
    train = folder / "train"
    classes = sorted(p.name for p in train.iterdir())
    assert len(FolderDataset(str(train)).classes) == len(classes) >= 2
    (train / classes[0] / "up").symlink_to("..")
    with pytest.raises(DatasetError, match=f"{train}/{classes[0]}/up: the folder {train} again"):
        FolderDataset(str(train))
    (train / classes[0] / "up").unlink()
    (train / "copy").symlink_to(train / classes[1])  # one folder as two classes
    with pytest.raises(DatasetError, match="through a symbolic link"):
        FolderDataset(str(train))
    (train / "copy").unlink()
    single = tmp_path / "single"
    single.mkdir()
    (train / classes[0]).rename(single / classes[0])
    with pytest.raises(DatasetError, match=rf"{single}: 1 class folder found \({classes[0]}\); "
                                           "a classifier needs at least 2"):
        FolderDataset(str(single))


def test_empty_training_folder_through_main(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class folders found"):
        main(cls_args(tiny_opts(tmp_path / "data", tmp_path / "out")))


class _Py2Pickler(pickle._Pickler):
    """Writes bytes with Python 2's str opcodes (SHORT_BINSTRING / BINSTRING), as the CIFAR
    release was pickled: Python 3 reads them back as bytes (encoding="bytes", ours) or str
    (encoding="latin1", torchvision's)."""

    def save_bytes(self, obj):
        short = len(obj) < 256
        self.write((pickle.SHORT_BINSTRING + bytes([len(obj)])) if short
                   else (pickle.BINSTRING + struct.pack("<i", len(obj))))
        self.write(obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def _release_pickle(obj):
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _write_cifar10(root, per_batch=4):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        (base / name).write_bytes(_release_pickle(batch))
    names = [f"class{k}".encode() for k in range(10)]
    (base / "batches.meta").write_bytes(_release_pickle({b"label_names": names}))
    return base


def test_cifar_pickles(tmp_path):
    base = _write_cifar10(tmp_path)
    train = CifarDataset(str(tmp_path), "cifar10", train=True)
    test = CifarDataset(str(base), "cifar10", train=False)  # ROOT may be the folder itself
    assert (len(train), len(test), len(train.classes)) == (20, 4, 10)
    image, label = train[5]
    raw = pickle.loads((base / "data_batch_2").read_bytes(), encoding="bytes")
    assert np.array_equal(np.asarray(image), raw[b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == raw[b"labels"][1]
    with pytest.raises(DatasetError, match="cifar-100-python/train: missing"):
        CifarDataset(str(tmp_path), "cifar100")


@pytest.mark.parametrize("train", [True, False])
def test_cifar_reads_as_torchvisions_reader(tmp_path, monkeypatch, train):
    """torchvision.datasets.CIFAR10 as the oracle for the release's layout (its md5 check of
    the real files is switched off: these are generated)."""
    import torchvision

    _write_cifar10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    peer = torchvision.datasets.CIFAR10(str(tmp_path), train=train, download=False)
    ours = CifarDataset(str(tmp_path), "cifar10", train=train)
    assert ours.classes == peer.classes and len(ours) == len(peer)
    for index in range(len(peer)):
        (image, label), (peer_image, peer_label) = ours[index], peer[index]
        assert label == peer_label and np.array_equal(np.asarray(image), np.asarray(peer_image))


def test_cifar_training_runs(tmp_path):
    _write_cifar10(tmp_path / "cifar")
    opts = ["MODEL.DEVICE", "cpu", "MODEL.ARCH", "cifar", "MODEL.RESNEXT.TEMPLATE", "X29_2x4d",
            "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "DATA.NAME", "cifar10",
            "DATA.ROOT", str(tmp_path / "cifar"), "DATA.NUM_WORKERS", "0",
            "INPUT.TRAIN_CROP", "pad_crop", "INPUT.TRAIN_SIZE", "32", "INPUT.TEST_RESIZE", "32",
            "INPUT.TEST_CROP", "32", "SOLVER.IMS_PER_BATCH", "10", "SOLVER.MAX_ITER", "2",
            "TEST.IMS_PER_BATCH", "4", "OUTPUT_DIR", str(tmp_path / "out")]
    result = main(cls_args(opts))
    assert result["images"] == 4 and np.isfinite(result["loss"])
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)
    assert "resnext_det" not in final  # not a detection backbone: no detector metadata


@pytest.mark.parametrize("damage, message", [
    (lambda base: (base / "data_batch_2").write_bytes(b""), "data_batch_2: not the CIFAR python"),
    (lambda base: (base / "data_batch_3").write_bytes(pickle.dumps({b"labels": [1]})),
     r"data_batch_3: not the CIFAR python release \(no \['data'\]"),
    (lambda base: (base / "data_batch_1").write_bytes(pickle.dumps([1, 2])), "data_batch_1: not"),
    (lambda base: (base / "data_batch_4").write_bytes(pickle.dumps(
        {b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, 3]})),
     r"data_batch_4: expected 'data' uint8 \(N, 3072\) and N integer 'labels'"),
    (lambda base: (base / "data_batch_5").write_bytes(pickle.dumps(
        {b"data": np.zeros((4, 1024), np.uint8), b"labels": [1, 2, 3, 4]})), "data_batch_5: expected"),
    (lambda base: (base / "data_batch_5").write_bytes(pickle.dumps(
        {b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, 3, 10]})),
     r"labels \[10\] outside the 10 classes of .*batches.meta"),
    (lambda base: (base / "batches.meta").write_bytes(pickle.dumps({b"names": []})),
     r"batches.meta: not the CIFAR python release \(no \['label_names'\]"),
])
def test_damaged_cifar_files_are_errors_naming_them(tmp_path, damage, message):
    """Each was a raw EOFError / KeyError / ValueError, and a labels list shorter than the
    images paired them silently wrong."""
    damage(_write_cifar10(tmp_path))
    with pytest.raises(DatasetError, match=message):
        CifarDataset(str(tmp_path), "cifar10", train=True)


@pytest.mark.parametrize("python2", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_cifar100_reads_as_torchvisions_reader(tmp_path, monkeypatch, python2, train):
    """CIFAR-100's fine labels and names, against torchvision.datasets.CIFAR100, for the
    release's Python 2 pickles and for files pickled again by Python 3 (str keys: torchvision
    read them, ours said "not the CIFAR python release")."""
    import torchvision

    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(0)
    def text(value):  # what Python 3 pickles where the release has Python 2 str
        if isinstance(value, list):
            return [text(v) for v in value]
        return value.decode() if isinstance(value, bytes) else value

    dump = _release_pickle if python2 else (
        lambda obj: pickle.dumps({k.decode(): text(v) for k, v in obj.items()}))
    for name, count in (("train", 7), ("test", 5)):
        fine = [int(v) for v in rng.integers(0, 100, count)]
        (base / name).write_bytes(dump({
            b"filenames": [b"x.png"] * count, b"batch_label": b"batch", b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine],
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8)}))
    names = {b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
             b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)]}
    (base / "meta").write_bytes(dump(names))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    peer = torchvision.datasets.CIFAR100(str(tmp_path), train=train, download=False)
    ours = CifarDataset(str(tmp_path), "cifar100", train=train)
    assert ours.classes == peer.classes and len(ours) == len(peer)
    for (image, label), (peer_image, peer_label) in zip(ours, peer):
        assert label == peer_label and np.array_equal(np.asarray(image), np.asarray(peer_image))
