"""A SIGKILL at every rename of an evaluation that replaces an earlier one: the folder holds
the earlier evaluation's files or the new one's, each set whole, never a mix.

The evaluation ran in a forked child that kills itself just before its N-th os.replace /
os.rename, for every N until one finishes; after each, pycocotools scores the folder's
coco_instances_results.json, which must give the AP its coco_metrics.json states, and its
instances_predictions.pth must hold the same detections. The two evaluations' detections
differ (exact boxes, then shifted ones): a mix of their files disagrees.
"""
import contextlib
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnext_det.evaluation import COCOMetricsEvaluator
from resnext_det.utils.io import replaced_folder
from tests.helpers import register_coco_file

BOXES = [[4.0, 6.0, 20.0, 16.0], [30.0, 8.0, 12.0, 30.0]]  # XYWH, one per image
FILES = ("coco_instances_results.json", "coco_metrics.json", "instances_predictions.pth")


def _dataset(tmp_path):
    gt = {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64}
                     for i in range(2)],
          "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": box,
                           "area": box[2] * box[3], "iscrowd": 0} for i, box in enumerate(BOXES)],
          "categories": [{"id": 7, "name": "seven"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    register_coco_file("killed_eval_set", path, tmp_path)
    return path


def _evaluate(folder, shift, evaluator_class=COCOMetricsEvaluator, **kwargs):
    """COCOMetricsEvaluator (or `evaluator_class`) on detections of the ground-truth boxes
    moved by `shift` px."""
    evaluator = evaluator_class("killed_eval_set", output_dir=str(folder), **kwargs)
    evaluator.reset()
    for i, (x, y, w, h) in enumerate(BOXES):
        instances = Instances((64, 64), pred_boxes=Boxes(torch.tensor(
            [[x + shift, y + shift, x + shift + w, y + shift + h]])), scores=torch.tensor([0.9]),
            pred_classes=torch.tensor([0]))
        evaluator.process([{"image_id": i + 1, "height": 64, "width": 64}],
                          [{"instances": instances}])
    return evaluator.evaluate()


def _killed_at(folder, n):
    """_evaluate(folder, 8) in a forked child that SIGKILLs itself just before its n-th
    rename; whether the kill came (else the evaluation ended)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        calls = [0]

        def killing(rename):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                return rename(*args, **kwargs)
            return call

        os.replace, os.rename = killing(os.replace), killing(os.rename)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _evaluate(folder, 8)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _consistent(folder, gt_path):
    """None when the folder's three files are one evaluation's, else what disagrees."""
    results = json.loads((folder / FILES[0]).read_text())
    stated = json.loads((folder / FILES[1]).read_text())["bbox"]["AP"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        scored = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        scored.evaluate(), scored.accumulate(), scored.summarize()
    stored = torch.load(folder / FILES[2], weights_only=False)  # detectron2's list of dicts
    predicted = [d for p in stored for d in p["instances"]]
    problems = []
    if abs(scored.stats[0] * 100 - stated) > 1e-6:
        problems.append(f"coco_metrics.json says AP {stated}, its results score "
                        f"{scored.stats[0] * 100}")
    if sorted(d["bbox"] for d in predicted) != sorted(r["bbox"] for r in results):
        problems.append("instances_predictions.pth holds other detections than the results")
    return "; ".join(problems) or None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
@pytest.mark.parametrize("other", [None, "model_final.pth"], ids=["its_own_folder", "shared"])
def test_an_evaluation_killed_at_any_rename_leaves_one_evaluation_whole(tmp_path, other):
    """coco_metrics.json was written after the staged files had moved in, and those moved
    one by one: a kill in between left the new detections with the earlier evaluation's AP,
    or the new coco_instances_results.json with the earlier instances_predictions.pth.
    A folder of the evaluation's files only is replaced whole (a kill between the two
    renames leaves none: the next evaluation puts the earlier back); in a folder with other
    files (`other`: a training's, the output_dir a caller gave) those stay, and the
    metrics, moved last after the earlier ones were removed, only ever sit beside their own
    results."""
    gt_path = _dataset(tmp_path)
    earlier = tmp_path / "earlier"
    _evaluate(earlier, 0)
    assert _consistent(earlier, gt_path) is None
    states, absent = [], []
    for n in range(1, 50):
        folder = tmp_path / f"kill_{n}" / "digits"
        folder.mkdir(parents=True)
        for name in FILES:  # the earlier evaluation, as a training's folder holds it
            (folder / name).write_bytes((earlier / name).read_bytes())
        if other:
            (folder / other).write_bytes(b"a training's file")
        if not _killed_at(folder, n):
            break
        # a killed write's temporary is no result; between two renames there is no folder
        present = sorted(p.name for p in folder.iterdir() if ".tmp-" not in p.name
                         ) if folder.is_dir() else []
        if other:
            assert (folder / other).read_bytes() == b"a training's file", n
            present.remove(other)
            if FILES[1] not in present:  # the metrics removed, not yet moved in: no claim
                continue
        if not present:
            absent.append(n)
            with pytest.raises(RuntimeError), replaced_folder(str(folder)):
                raise RuntimeError  # the entry of the next evaluation, which then failed
            assert _consistent(folder, gt_path) is None  # the earlier one, back
            continue
        assert present == sorted(FILES), (n, present)
        states.append((n, _consistent(folder, gt_path)))
    else:
        pytest.fail("the evaluation did not end in 50 renames")
    assert n > 1, "no kill landed inside the evaluation"
    assert bool(absent) == (other is None)  # the whole-folder swap happens in its own folder
    assert [s for s in states if s[1]] == []
    assert _consistent(folder, gt_path) is None  # the last one ran to its end
    new = json.loads((folder / FILES[1]).read_text())["bbox"]["AP"]
    assert new != json.loads((earlier / FILES[1]).read_text())["bbox"]["AP"]


def test_an_output_dir_with_a_trailing_slash_is_replaced_beside_itself(tmp_path):
    """`out/`: the staging folder and the earlier one's were made inside it, and renaming
    the folder into itself stopped the evaluation (OSError EINVAL) after the inference."""
    gt_path = _dataset(tmp_path)
    folder = tmp_path / "inference" / "digits"
    _evaluate(f"{folder}/", 0)
    _evaluate(f"{folder}/", 8)  # over the first
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert _consistent(folder, gt_path) is None
    assert sorted(p.name for p in folder.parent.iterdir()) == ["digits"]


def _evaluated_twice_as_detectron2(tmp_path, folder, gt_path):
    """Ours into `folder` over an earlier evaluation of ours, whole, with the detections
    detectron2's COCOEvaluator writes for the same outputs (in place, into a folder of its
    own)."""
    _evaluate(folder, 0)
    _evaluate(folder, 8)
    with contextlib.redirect_stdout(io.StringIO()):
        _evaluate(tmp_path / "d2", 8, COCOEvaluator, use_fast_impl=False)
    assert sorted(os.listdir(folder)) == sorted(FILES)
    assert _consistent(Path(folder), gt_path) is None
    results = [json.loads((Path(f) / FILES[0]).read_text()) for f in (folder, tmp_path / "d2")]
    assert results[0] == results[1]


def test_an_output_dir_that_is_a_link_keeps_its_link(tmp_path):
    """A link (to a larger disk, say): the whole-folder swap renamed the link and made a
    folder in its place, so the files left the disk it points to, and the link stayed
    beside it as <name>.old.tmp-<pid> (rmtree refuses links)."""
    gt_path = _dataset(tmp_path)
    target, link = tmp_path / "disk" / "eval", tmp_path / "inference" / "digits"
    target.mkdir(parents=True)
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    _evaluated_twice_as_detectron2(tmp_path, link, gt_path)
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == sorted(FILES)
    assert [p.name for p in link.parent.iterdir()] == ["digits"]


@pytest.mark.parametrize("spelled", [".", "its path"])
def test_an_output_dir_that_is_the_working_directory_stays_it(tmp_path, monkeypatch, spelled):
    """".": renaming it stopped the evaluation after the inference (OSError EBUSY); by its
    path the swap went through, and the process went on in a removed folder (os.getcwd:
    FileNotFoundError)."""
    gt_path = _dataset(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _evaluated_twice_as_detectron2(tmp_path, "." if spelled == "." else str(work), gt_path)
    assert os.path.samefile(os.getcwd(), work)


def test_an_output_dir_that_is_a_mount_point_is_written_into(tmp_path):
    """A volume mounted as the output folder (docker run -v ...:/eval): it cannot be
    renamed, and the evaluation stopped after the inference (OSError EBUSY). A bind mount
    of the same file system, which os.path.ismount does not see; root only."""
    gt_path = _dataset(tmp_path)
    volume, folder = tmp_path / "volume", tmp_path / "eval"
    volume.mkdir(), folder.mkdir()
    mount = subprocess.run(["mount", "--bind", str(volume), str(folder)], capture_output=True)
    if mount.returncode:
        pytest.skip(f"no bind mount here: {mount.stderr.decode().strip()}")
    try:
        _evaluated_twice_as_detectron2(tmp_path, folder, gt_path)
        assert sorted(p.name for p in volume.iterdir()) == sorted(FILES)
    finally:
        subprocess.run(["umount", str(folder)], check=True)
