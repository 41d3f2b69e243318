"""tools/convert_weights.py: prints renames and leftovers, writes the .pkl, fails by name."""
import importlib.util
import pathlib

import torch

from ckpt_helpers import TINY, load_pkl

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "convert_weights.py"


def _tool():
    spec = importlib.util.spec_from_file_location("convert_weights_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_pkl_with_metadata(tiny_state, tmp_path, capsys):
    torch.save(tiny_state, tmp_path / "tiny.pth")
    out = tmp_path / "tiny.pkl"
    assert _tool().main([str(tmp_path / "tiny.pth"), str(out), "--verbose", "--block-form", "b",
                         "--stride-in-1x1", "true"]) == 0
    printed = capsys.readouterr().out
    assert "stem.conv1.weight -> stem.conv1.weight" in printed
    assert "dropped 2 (classifier layer" in printed and "linear.weight" in printed
    data = load_pkl(out)
    assert data["__author__"] == "resnext_det" and data["matching_heuristics"] is True
    meta = data["resnext_det"]
    assert (meta["template"], meta["block_form"], meta["stride_in_1x1"]) == (TINY, "b", True)
    assert "res2.0.paths.1.conv1.weight" in data["model"]


def test_tool_names_the_bad_key(tiny_state, tmp_path, capsys):
    state = {k: v for k, v in tiny_state.items() if k != "res3.1.conv3.weight"}
    torch.save(state, tmp_path / "bad.pth")
    assert _tool().main([str(tmp_path / "bad.pth"), str(tmp_path / "bad.pkl")]) == 2
    assert "missing key 'res3.1.conv3.weight'" in capsys.readouterr().err
    assert not (tmp_path / "bad.pkl").exists()
