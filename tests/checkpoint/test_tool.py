"""tools/convert_weights.py: prints renames and leftovers, writes the .pkl, fails by name."""
import importlib.util
import os
import pathlib
import stat

import pytest
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


def _one_error_line(capsys):
    """What the tool printed on stderr, which must be one `error:` line (no usage text)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_tool_never_replaces_src_nor_an_existing_out_unasked(tiny_state, tmp_path, capsys):
    src, out = tmp_path / "tiny.pth", tmp_path / "mine.pkl"
    torch.save(tiny_state, src)
    before = src.read_bytes()
    for same in (src, tmp_path / ".." / tmp_path.name / "tiny.pth"):
        assert _tool().main([str(src), str(same), "--force"]) == 2
        assert "is SRC" in _one_error_line(capsys)
    assert src.read_bytes() == before  # the fc the conversion drops is still there
    out.write_bytes(b"the user's file")
    assert _tool().main([str(src), str(out)]) == 2
    assert "exists; pass --force" in _one_error_line(capsys)
    assert out.read_bytes() == b"the user's file"
    assert _tool().main([str(src), str(out), "--force"]) == 0
    assert load_pkl(out)["resnext_det"]["template"] == TINY
    capsys.readouterr()
    # --force onto what is not a file: /dev/full became a regular file (the atomic rename)
    fifo = tmp_path / "a_fifo"
    os.mkfifo(fifo)
    for other in (fifo, tmp_path):
        assert _tool().main([str(src), str(other), "--force"]) == 2
        assert "exists and is not a file" in _one_error_line(capsys)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_tool_refuses_pixel_std_that_cannot_normalize(tiny_state, tmp_path, capsys):
    torch.save(tiny_state, tmp_path / "tiny.pth")
    for flag, values in (("--pixel-std", ["0", "1", "1"]), ("--pixel-std", ["1", "-1", "1"]),
                         ("--pixel-std", ["1", "1", "nan"]), ("--pixel-mean", ["inf", "0", "0"])):
        assert _tool().main([str(tmp_path / "tiny.pth"), str(tmp_path / "o.pkl"), flag,
                             *values]) == 2
        assert f"{flag[2:].replace('-', '_')} [" in capsys.readouterr().err
    assert not (tmp_path / "o.pkl").exists()


def test_list_keeps_the_rows_with_the_word(capsys):
    assert _tool().main(["--list", "x101_64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name") and len(lines) > 2
    assert all("64x4d" in line for line in lines[2:])
    assert _tool().main(["--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) > len(lines)


def test_tool_writes_torchvisions_own_normalization_and_keeps_it_when_reconverted(tmp_path,
                                                                                  capsys):
    """The tool without flags on a torchvision file: the metadata is torchvision's own
    ImageNet transform (its weights' mean / std, x 255, RGB); converting our .pkl again keeps
    every convention (the second conversion reads them from the first's metadata)."""
    import torchvision

    transform = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
    want = {"input_format": "RGB", "pixel_mean": [255 * m for m in transform.mean],
            "pixel_std": [255 * s for s in transform.std], "stride_in_1x1": False}
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    assert _tool().main([str(tmp_path / "r50.pth"), str(tmp_path / "once.pkl")]) == 0
    assert _tool().main([str(tmp_path / "once.pkl"), str(tmp_path / "twice.pkl")]) == 0
    for name in ("once.pkl", "twice.pkl"):
        meta = load_pkl(tmp_path / name)["resnext_det"]
        got = {k: meta[k] for k in want}
        assert got["pixel_mean"] == pytest.approx(want["pixel_mean"])
        assert got["pixel_std"] == pytest.approx(want["pixel_std"])
        assert (got["input_format"], got["stride_in_1x1"]) == ("RGB", False), name


def test_ctrl_c_is_one_line_and_130(tiny_state, tmp_path, capsys, monkeypatch):
    """Was a KeyboardInterrupt traceback (the other tools said `interrupted (Ctrl-C)`)."""
    tool = _tool()
    torch.save(tiny_state, tmp_path / "tiny.pth")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tool, "convert_weights", interrupted)
    with pytest.raises(SystemExit) as exit_:
        tool.run([str(tmp_path / "tiny.pth"), str(tmp_path / "out.pkl")])
    assert exit_.value.code == 130 and "interrupted (Ctrl-C)" in capsys.readouterr().err
    assert not (tmp_path / "out.pkl").exists()


def test_a_train_net_checkpoint_converts_with_the_input_it_was_trained_on(datasets_root,
                                                                           tmp_path, capsys):
    """README: our detectron2 checkpoints convert "as trained". A train_net.py checkpoint
    stores its INPUT.FORMAT and pixel statistics, yet its .pkl said "conventions unknown"
    (all None): a detector started from it was then neither warned nor set
    (CONFIG_FROM_WEIGHTS) when its config fed other input. The values are the config's."""
    import subprocess
    import sys

    from tests.engine.test_train_net import CONFIG, TINY as TINY_DETECTOR

    given = {"INPUT.FORMAT": "BGR", "MODEL.PIXEL_MEAN": [103.5, 116.5, 123.5],
             "MODEL.PIXEL_STD": [57.5, 57.0, 58.5]}
    overrides = [str(v) for key, value in given.items() for v in (key, value)]
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(TOOL.parent / "train_net.py"), "--config-file",
                           CONFIG, *map(str, TINY_DETECTOR), *overrides, "SOLVER.MAX_ITER", "1",
                           "OUTPUT_DIR", str(run)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, DETECTRON2_DATASETS=str(datasets_root)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tool().main([str(run / "model_final.pth"), str(tmp_path / "det.pkl")]) == 0
    meta = load_pkl(tmp_path / "det.pkl")["resnext_det"]
    assert meta["input_format"] == given["INPUT.FORMAT"]
    assert meta["pixel_mean"] == pytest.approx(given["MODEL.PIXEL_MEAN"])
    assert meta["pixel_std"] == pytest.approx(given["MODEL.PIXEL_STD"])
