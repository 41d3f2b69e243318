"""A file write SIGKILLed just before its rename (atomic_write's last step) leaves
`<file>.tmp-<pid>`, which nothing a killed process ran could remove: the next write of the
same file removes it (tools/convert_weights.py --force over an earlier output, the cache of
converted MODEL.WEIGHTS), and keeps those of writers that still run.
"""
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
import torchvision

from resnext_det.checkpoint import load_weights
from tests.helpers import load_tool


def _torchvision_file(path, seed):
    """A torchvision ResNeXt-50 2x2d state dict (groups=2, width_per_group=2)."""
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck,
                                                [3, 4, 6, 3], groups=2, width_per_group=2
                                                ).state_dict(), path)
    return path


def _killed_before_rename(call):
    """call() in a forked child that SIGKILLs itself at its first os.replace; whether it did."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        def killing(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        os.replace = killing
        try:
            call()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _temporaries(folder):
    return sorted(name for name in os.listdir(folder) if ".tmp-" in name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
def test_convert_force_over_a_killed_conversion_leaves_no_temporary(tmp_path, capsys):
    tool = load_tool("convert_weights")
    earlier, new = (_torchvision_file(tmp_path / f"tv{seed}.pth", seed) for seed in (0, 1))
    out = tmp_path / "out.pkl"
    assert tool.run([str(earlier), str(out)]) == 0
    kept = out.read_bytes()
    assert _killed_before_rename(lambda: tool.run([str(new), str(out), "--force"]))
    assert out.read_bytes() == kept  # the earlier output, whole
    assert len(_temporaries(tmp_path)) == 1  # the killed write's 22 MB
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a write in progress in another process (its pid runs) is not this run's to remove
        (tmp_path / f"out.pkl.tmp-{sleeper.pid}").write_bytes(b"half")
        assert tool.run([str(new), str(out), "--force"]) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _temporaries(tmp_path) == [f"out.pkl.tmp-{sleeper.pid}"]
    with open(out, "rb") as f:
        converted = pickle.load(f)["model"]
    source = torch.load(new)  # the new source's weights, by torchvision's names
    assert (converted["stem.conv1.weight"] == source["conv1.weight"].numpy()).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
def test_a_killed_cache_write_is_removed_by_the_next_conversion(tmp_path):
    source, cache = _torchvision_file(tmp_path / "tv.pth", 0), tmp_path / "cache"
    assert _killed_before_rename(lambda: load_weights(str(source), cache_dir=str(cache)))
    assert len(_temporaries(cache)) == 1 and not [n for n in os.listdir(cache) if ".tmp-" not in n]
    loaded = load_weights(str(source), cache_dir=str(cache))
    assert _temporaries(cache) == [] and os.listdir(cache) == [os.path.basename(loaded.converted_to)]
