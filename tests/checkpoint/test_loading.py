"""load_weights' state between loads: the conversion cache and the remembered load.

Oracle: the tensors of the torchvision files written here (torchvision's naming:
conv1.weight is our stem.conv1.weight)."""
import gc
import os
import pickle
import shutil
import weakref
from pathlib import Path

import pytest
import torch
import torchvision

from resnext_det.checkpoint import load_weights, loading

STEM = "stem.conv1.weight"


def _torchvision_state(seed):
    """A torchvision ResNeXt-50 2x2d (groups=2, width_per_group=2) with its own random start."""
    torch.manual_seed(seed)
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3],
                                            groups=2, width_per_group=2).state_dict()


@pytest.fixture(scope="module")
def states():
    return _torchvision_state(0), _torchvision_state(1)


def _stem(loaded):
    return torch.as_tensor(loaded.checkpoint["model"][STEM])


def _replace_keeping_size_and_mtime(path, state):
    """Write `state` over `path` as a new file with the old one's size and times (cp -p,
    rsync -a and tar keep a file's mtime)."""
    stat = os.stat(path)
    os.remove(path)
    torch.save(state, path)  # the same layout: the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def test_a_file_replaced_by_one_of_its_size_and_mtime_is_loaded_anew(states, tmp_path):
    """The load that MODEL.RESNEXT.CONFIG_FROM_WEIGHTS remembers for the checkpointer was
    keyed by path, size and mtime: a file replaced since by another of the same size and
    mtime came back as the old one."""
    old, new = states
    path = tmp_path / "w.pth"
    torch.save(old, path)
    assert torch.equal(_stem(load_weights(str(path), remember=True)), old["conv1.weight"])
    _replace_keeping_size_and_mtime(path, new)
    assert torch.equal(_stem(load_weights(str(path))), new["conv1.weight"])


def test_a_remembered_load_is_dropped_by_the_next_load(states, tmp_path):
    """It was kept until a load of the same file: after a --resume, which loads the run's
    checkpoint instead, the weights stayed in memory for the whole training."""
    path, other = tmp_path / "w.pth", tmp_path / "other.pth"
    torch.save(states[0], path)
    torch.save(states[1], other)
    remembered = weakref.ref(load_weights(str(path), remember=True))
    load_weights(str(other))
    gc.collect()
    assert remembered() is None


def _cut(entry):
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _empty(entry):
    entry.write_bytes(b"")


def _not_ours(entry):
    entry.write_bytes(pickle.dumps({"model": {}}))


@pytest.mark.parametrize("damage, problem", [(_cut, "a truncated or damaged pickle"),
                                             (_empty, "is empty"),
                                             (_not_ours, "not a conversion of ours")])
def test_a_damaged_cache_entry_is_converted_again(states, tmp_path, caplog, damage, problem):
    """A cache entry cut short (a full disk, a copy of the output folder stopped midway) made
    every later load of the weights fail, with advice to download again a file the user never
    had; one without our metadata was a KeyError."""
    state = states[0]
    path, cache = tmp_path / "w.pth", str(tmp_path / "cache")
    torch.save(state, path)
    entry = Path(load_weights(str(path), cache_dir=cache).converted_to)
    damage(entry)
    with caplog.at_level("WARNING"):
        again = load_weights(str(path), cache_dir=cache)
    assert f"{entry}, the cached conversion of {path}: {problem}" in caplog.text
    assert "converted again" in caplog.text
    assert again.converted_to == str(entry) and torch.equal(_stem(again), state["conv1.weight"])
    reused = load_weights(str(path), cache_dir=cache)  # the entry was written whole again
    assert reused.report is None and torch.equal(_stem(reused), state["conv1.weight"])


def test_the_fingerprint_covers_the_template_table_the_converter_reads(tmp_path):
    """The cache entry's code fingerprint covered checkpoint/ alone; template_infer,
    block_forms and validate read modeling/ (the templates, the block forms, the model the
    keys are checked against): a conversion cached before a fix there was reused."""
    package = Path(loading.__file__).parents[1]
    tree = tmp_path / "resnext_det"
    shutil.copytree(package, tree, ignore=shutil.ignore_patterns("__pycache__"))
    assert loading.code_fingerprint(tree) == loading.converter_fingerprint()
    for changed in ("modeling/templates.py", "checkpoint/sources/torch7.py"):
        source = tree / changed
        code = source.read_bytes()
        source.write_bytes(code.replace(b"def ", b"def  ", 1))
        assert loading.code_fingerprint(tree) != loading.converter_fingerprint(), changed
        source.write_bytes(code)
    sources = tree / "checkpoint" / "sources"
    (sources / "torch7.py").rename(sources / "torch8.py")
    assert loading.code_fingerprint(tree) != loading.converter_fingerprint()
