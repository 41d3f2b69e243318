"""A re-export killed (SIGKILL) before one of its renames: --output holds the earlier export
whole (model.ts, its config.yaml, dumps and --run-eval metrics), never some files of each,
and the next export goes on and leaves no temporaries.

Each export runs in a forked child (tools/export_model.py's main, in-process) that kills
itself just before it renames a file or folder onto the name given.
"""
import os
import signal

import pytest
import torch
import yaml

from resnext_det.export.main import claim_output_dir
from resnext_det.utils.io import release_folder
from tests.export.helpers import CONFIGS, TINY, tiny_model
from tests.helpers import load_tool

EARLIER_FILES = ("config.yaml", "model.ts", "model_ts_code.txt",
                 "inference/digits_val/coco_metrics.json")


def _argv(out, weights):
    return ["--output", str(out), "--run-eval", "--config-file", str(CONFIGS["faster_rcnn"]),
            *map(str, TINY), "DATALOADER.NUM_WORKERS", "0", "MODEL.WEIGHTS", str(weights)]


def _export(argv, kill_before=None):
    """tools/export_model.py in a forked child, SIGKILLed just before its first os.replace /
    os.rename onto a path named `kill_before`; whether the kill came."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        def killing(rename):
            def call(src, dst, *args, **kwargs):
                if os.path.basename(os.path.normpath(dst)) == kill_before:
                    os.kill(os.getpid(), signal.SIGKILL)
                return rename(src, dst, *args, **kwargs)
            return call

        os.replace, os.rename = killing(os.replace), killing(os.rename)
        try:
            load_tool("export_model").run(argv)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _leftovers(out):
    inside = [os.path.relpath(os.path.join(d, n), out) for d, dirs, files in os.walk(out)
              for n in dirs + files if ".tmp-" in n or ".kept-" in n]
    beside = [n for n in os.listdir(out.parent) if n.startswith(out.name + ".")]
    return inside + beside


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two tiny detectors' checkpoints: the earlier export's and the new one's."""
    folder = tmp_path_factory.mktemp("weights")
    paths = [folder / f"model_{seed}.pth" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        torch.save({"model": tiny_model("faster_rcnn", seed=seed).state_dict()}, path)
    return paths


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
@pytest.mark.parametrize("kill_before", ["model_ts_code.txt", "digits_val", "out"])
def test_a_killed_re_export_leaves_the_earlier_export_whole(datasets_root, tmp_path, monkeypatch,
                                                          weights, kill_before):
    """config.yaml was written over the earlier one at start-up (put back on an exception, not
    on a SIGKILL), the staged files moved in one by one and the --run-eval folder after them:
    a kill left the new config.yaml, or the new model.ts, beside the earlier dumps and the
    earlier model's AP. The export now fills a staging folder that replaces --output whole;
    a kill between its two renames ("out") leaves no --output, which the next export puts
    back before it claims the folder."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    out = tmp_path / "out"
    assert not _export(_argv(out, weights[0]))
    earlier = {name: (out / name).read_bytes() for name in EARLIER_FILES}
    assert _export(_argv(out, weights[1]), kill_before=kill_before), "no kill came"
    if kill_before == "out":  # between the two renames: the earlier export is aside
        assert not out.exists()
        claim_output_dir(str(out))  # the next export's first step puts it back
        release_folder(str(out))
    assert {name: (out / name).read_bytes() for name in EARLIER_FILES} == earlier
    assert not _export(_argv(out, weights[1]))  # the next export goes on
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["MODEL"]["WEIGHTS"] == str(weights[1])
    assert (out / "model.ts").read_bytes() != earlier["model.ts"]
    assert (out / "inference/digits_val/coco_metrics.json").is_file()
    assert _leftovers(out) == []
