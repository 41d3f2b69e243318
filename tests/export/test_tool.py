"""tools/export_model.py end to end, and its errors on bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch

from resnext_det.export import ExportedDetector, ExportError
from resnext_det.export.export import export_scripting, require_onnx
from resnext_det.utils.testing import detection_error
from tests.export.helpers import CONFIGS, ROOT, TINY, tiny_model
from tests.helpers import load_tool, pycocotools_stats


def _cli_args(*extra):
    return ["--config-file", str(CONFIGS["faster_rcnn"]), *map(str, extra), *map(str, TINY),
            "DATALOADER.NUM_WORKERS", "0"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny detector's checkpoint (random norms and heads stand for a trained model's)."""
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    torch.save({"model": tiny_model("faster_rcnn").state_dict()}, path)
    return path


def test_exports_trained_weights(datasets_root, digits_inputs, tmp_path):
    model = tiny_model("faster_rcnn")  # stands for a trained model: random norms and heads
    weights = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict()}, weights)  # detectron2's checkpoint layout
    out = tmp_path / "export"
    cmd = [sys.executable, str(ROOT / "tools/export_model.py"), "--output", str(out), "--run-eval",
           *_cli_args("MODEL.WEIGHTS", weights)]
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "100 detections from the file, 100 from the model" in proc.stdout + proc.stderr
    assert (out / "model.ts").is_file() and (out / "config.yaml").is_file()
    evaluation = out / "inference/digits_val"  # --run-eval: the exported file's detections
    scored = pycocotools_stats(datasets_root / "digits/annotations/instances_val.json",
                               json.loads((evaluation / "coco_instances_results.json").read_text()))
    written = json.loads((evaluation / "coco_metrics.json").read_text())["bbox"]
    assert {k: written[k] for k in scored} == pytest.approx(scored, nan_ok=True)

    exported = ExportedDetector(str(out / "model.ts"))  # the default: the folded NHWC copy
    for x in digits_inputs:
        with torch.no_grad():
            expected = model([x])[0]["instances"]  # the model as trained, eager
        got = exported([x])[0]["instances"]
        assert len(got) == len(expected) > 10
        assert detection_error(got, expected) < 1e-3


@pytest.mark.parametrize("extra, message", [
    (["--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
    (["--format", "onnx", "--export-method", "scripting"],
     "--format onnx needs --export-method tracing"),
])
def test_bad_options_exit_2(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool("export_model").run(["--output", str(tmp_path), *extra, *_cli_args()])
    assert exit_info.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_unreadable_sample_image_exits_2(tmp_path, capsys, tiny_weights):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(SystemExit) as exit_info:
        load_tool("export_model").run(["--output", str(tmp_path / "out"), "--sample-image",
                                       str(bad), *_cli_args("MODEL.WEIGHTS", tiny_weights)])
    assert exit_info.value.code == 2
    assert f"error: --sample-image '{bad}': cannot read it as an image" in capsys.readouterr().err


def test_a_sample_image_the_resize_makes_empty_exits_2(tmp_path, capsys, tiny_weights):
    """1 x 2000 pixels resize to 0 x 64 at INPUT.MIN/MAX_SIZE_TEST 64: PIL raised ValueError."""
    import cv2
    import numpy as np

    thin = tmp_path / "thin.png"
    cv2.imwrite(str(thin), np.full((1, 2000, 3), 128, np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        load_tool("export_model").run(["--output", str(tmp_path / "out"), "--sample-image",
                                       str(thin), *_cli_args("MODEL.WEIGHTS", tiny_weights)])
    assert exit_info.value.code == 2
    assert (f"error: --sample-image '{thin}': its 1 x 2000 pixels resize (INPUT.MIN_SIZE_TEST, "
            "MAX_SIZE_TEST) to a side of 0 pixels") in capsys.readouterr().err


class _NotScriptable(torch.nn.Module):
    """A block whose forward goes through numpy, which TorchScript cannot compile."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(torch.from_numpy(x.numpy()))


def test_scripting_failure_is_an_export_error(tmp_path):
    model = tiny_model("retinanet")
    res2 = model.backbone.bottom_up.res2
    res2[0] = _NotScriptable(res2[0])
    with pytest.raises(ExportError, match=r"(?s)BLOCK_FORM='c'.*numpy.*--export-method tracing"):
        export_scripting(model, str(tmp_path / "model.ts"), block_form="c")


def test_missing_onnx_names_the_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ExportError, match="pip install onnx onnxruntime"):
        require_onnx()


def test_a_failed_export_keeps_the_earlier_one_whole(tmp_path, capsys, monkeypatch, tiny_weights):
    """A second export into the folder of a first: a Ctrl-C (or kill) inside the save wrote
    over model.ts in place, and a refused sample image left the new config.yaml beside the
    old model.ts. Now both stay as the first export wrote them."""
    import cv2
    import numpy as np

    picture = tmp_path / "sample.png"
    cv2.imwrite(str(picture), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    out = tmp_path / "export"
    load_tool("export_model").run(["--output", str(out), "--sample-image", str(picture),
                                   *_cli_args("MODEL.WEIGHTS", tiny_weights)])
    first = {name: (out / name).read_bytes() for name in ("model.ts", "config.yaml")}

    def save_half(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(first["model.ts"][:1000])
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(torch.jit.ScriptModule, "save", save_half)
        with pytest.raises(SystemExit) as exit_info:
            load_tool("export_model").run(["--output", str(out), "--sample-image", str(picture),
                                           *_cli_args("MODEL.WEIGHTS", tiny_weights, "MODEL.RESNEXT.FAST_INFERENCE", "")])
    assert exit_info.value.code == 130
    assert {name: (out / name).read_bytes() for name in first} == first
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(SystemExit):
        load_tool("export_model").run(["--output", str(out), "--sample-image", str(bad),
                                       *_cli_args("MODEL.WEIGHTS", tiny_weights, "MODEL.RESNEXT.FAST_INFERENCE", "")])
    assert {name: (out / name).read_bytes() for name in first} == first
    assert not [name for name in os.listdir(out) if ".tmp-" in name]


def test_no_weights_is_an_error(tmp_path, capsys):
    """detectron2's export wrote the random initialization (predict refuses it too)."""
    with pytest.raises(SystemExit) as exit_info:
        load_tool("export_model").run(["--output", str(tmp_path / "out"), *_cli_args()])
    assert exit_info.value.code == 2
    assert "error: MODEL.WEIGHTS='' is not valid: expected the trained detector's weights" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out" / "model.ts").exists()


def test_run_eval_names_pictures_deeper_than_8_bits(datasets_root, tmp_path, capsys, tiny_weights):
    """--run-eval read the test set with detectron2's plain mapper, which clips a 16-bit
    picture's values to 255: the file was scored on white pictures and the tool exited 0.
    Now it stops as the eager evaluation (Trainer.test) does, naming the picture."""
    import re
    import shutil

    import numpy as np
    from PIL import Image

    from resnext_det.data import register_digits

    root = tmp_path / "datasets"
    shutil.copytree(datasets_root / "digits", root / "digits")
    for path in (root / "digits/images/val").iterdir():  # PNG content; PIL reads by content
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257
        Image.fromarray(pixels).save(path, format="PNG")
    register_digits(root / "digits")
    try:
        with pytest.raises(SystemExit) as exit_info:
            load_tool("export_model").run(["--output", str(tmp_path / "out"), "--run-eval",
                                           *_cli_args("MODEL.WEIGHTS", tiny_weights)])
    finally:
        register_digits(datasets_root / "digits")
    assert exit_info.value.code == 2
    assert re.search(r"error: Evaluation image '.*' is a picture of more than 8 bits \(PIL "
                     r"mode 'I;16'\)", capsys.readouterr().err)


def test_the_test_sets_first_image_is_traced_as_detectron2s_mapper_makes_it(datasets_root):
    """Without --sample-image the trace runs on DATASETS.TEST[0]'s first image, read and
    resized as detectron2's DatasetMapper (is_train=False) makes it, at another test size."""
    from detectron2.data import DatasetCatalog, DatasetMapper

    from resnext_det.data import register_digits
    from resnext_det.export.main import sample_inputs
    from tests.export.helpers import tiny_cfg

    register_digits(datasets_root / "digits")
    cfg = tiny_cfg("faster_rcnn")
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT = 96, 200, "RGB"
    expected = DatasetMapper(cfg, is_train=False)(DatasetCatalog.get("digits_val")[0])
    (got,) = sample_inputs(cfg)
    assert got["image"].shape == expected["image"].shape == (3, 96, 96)
    assert torch.equal(got["image"], expected["image"].float())
    assert (got["height"], got["width"]) == (expected["height"], expected["width"])


def test_an_unreadable_first_test_image_exits_2(datasets_root, tmp_path, capsys, tiny_weights):
    """The trace's sample, DATASETS.TEST[0]'s first image, cannot be decoded: one error line
    naming it (detectron2's mapper raised a PIL traceback)."""
    import shutil

    from detectron2.data import DatasetCatalog

    from resnext_det.data import register_digits

    root = tmp_path / "datasets"
    shutil.copytree(datasets_root / "digits", root / "digits")
    register_digits(root / "digits")
    try:
        first = DatasetCatalog.get("digits_val")[0]["file_name"]
        with open(first, "wb") as f:
            f.write(b"not a picture")
        with pytest.raises(SystemExit) as exit_info:
            load_tool("export_model").run(["--output", str(tmp_path / "out"),
                                           *_cli_args("MODEL.WEIGHTS", tiny_weights)])
    finally:
        register_digits(datasets_root / "digits")
    assert exit_info.value.code == 2
    assert (f"error: DATASETS.TEST[0]'s first image {first!r} (or pass --sample-image FILE): "
            "cannot read it as an image") in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["link", "working_directory"])
def test_an_output_one_rename_cannot_replace_is_refused(tmp_path, monkeypatch, capsys, kind):
    """The export replaces --output whole in one rename: a symbolic link (the new files
    would land in a folder made in the link's place) or the working directory (EBUSY for
    ".", a removed folder under the process by its path) is refused before any work."""
    target = tmp_path / "target"
    target.mkdir()
    if kind == "link":
        output = tmp_path / "link"
        output.symlink_to(target, target_is_directory=True)
    else:
        output = target
        monkeypatch.chdir(target)
    tool = load_tool("export_model")
    with pytest.raises(SystemExit) as exit_info:
        tool.run(["--output", str(output), "--config-file",
                  str(ROOT / "configs" / "demo" / "faster_rcnn_X50_digits.yaml")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --output={str(output)!r} is not valid: expected a folder that the export " \
        "can replace whole" in err, err
    assert list(target.iterdir()) == []
