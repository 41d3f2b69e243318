"""`import resnext_det` registers models only; the digits demo set is registered on request."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from resnext_det.data import DEFAULT_NAMES, register_digits, register_digits_named_in
from tests.helpers import make_cfg

ROOT = Path(__file__).resolve().parents[2]
OURS = {
    "BACKBONE_REGISTRY": ["build_resnext_backbone", "build_resnext_fpn_backbone",
                          "build_retinanet_resnext_fpn_backbone"],
    "ROI_HEADS_REGISTRY": ["ResNeXtRes5ROIHeads"],
}
TOOL_IMPORT = re.compile(r"\b(tools|demo|pretrain_then_detect|load_tool)\b")
# In a fresh interpreter: what detectron2 registers by itself, then what importing
# resnext_det (and its data and engine packages) adds, registry by registry.
_PROBE = """
import json
import detectron2.data, detectron2.modeling
from detectron2.data import DatasetCatalog, MetadataCatalog
registries = {k: v for k, v in vars(detectron2.modeling).items() if k.endswith("_REGISTRY")}
def snapshot():
    return {"datasets": sorted(DatasetCatalog.list()), "metadata": sorted(MetadataCatalog.list()),
            **{k: sorted(name for name, _ in r) for k, r in registries.items()}}
before = snapshot()
import resnext_det, resnext_det.data, resnext_det.engine
after = snapshot()
print(json.dumps({k: sorted(set(after[k]) - set(before[k])) for k in after}))
"""


@pytest.fixture
def no_digits():
    """digits_train / digits_val unregistered during the test, and as they were after it (the
    session's datasets_root registered them for the worker's later tests, which failed)."""
    def clear():
        for name in DEFAULT_NAMES:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            if name in MetadataCatalog.list():
                MetadataCatalog.remove(name)
    before = {name: (DatasetCatalog[name], MetadataCatalog.get(name).as_dict())
              for name in DEFAULT_NAMES if name in DatasetCatalog.list()}
    clear()
    yield
    clear()
    for name, (load, metadata) in before.items():
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(**{k: v for k, v in metadata.items() if k != "name"})


def test_import_registers_the_models_and_no_dataset():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    added = json.loads(proc.stdout.splitlines()[-1])
    assert added.pop("datasets") == [] and added.pop("metadata") == []
    assert {k: v for k, v in added.items() if v} == OURS


@pytest.mark.parametrize("tool", ["train_net", "predict", "demo", "pretrain_cls"])
def test_a_tool_starts_without_detectron2s_import_warnings(tool):
    """torch deprecates torch.jit.script, which detectron2 and fvcore call at import: four
    FutureWarning lines at every start. resnext_det quiets those imports only: a script of
    the user's in the same process still warns."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
    user = "import resnext_det, torch\ntorch.jit.script(lambda x: x + 1)"
    proc = subprocess.run([sys.executable, "-c", user], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.stderr.count("`torch.jit.script` is deprecated") == 1, proc.stderr[-3000:]


def test_demo_and_pipeline_code_is_not_in_the_library():
    for moved in ("engine/demo.py", "classification/pipeline.py"):  # now tools/*.py
        assert not (ROOT / "resnext_det" / moved).exists(), moved
    for path in (ROOT / "resnext_det").rglob("*.py"):  # nothing of tools/ either
        imports = [line for line in path.read_text().splitlines()
                   if line.lstrip().startswith(("import ", "from "))]
        assert not [line for line in imports if TOOL_IMPORT.search(line)], path


def test_register_digits_defaults_to_detectron2_datasets(no_digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert register_digits() == DEFAULT_NAMES
    assert register_digits() == DEFAULT_NAMES  # idempotent
    meta = MetadataCatalog.get("digits_val")
    assert meta.image_root == str(tmp_path.resolve() / "digits" / "images" / "val")
    assert meta.json_file == str(tmp_path.resolve() / "digits" / "annotations" / "instances_val.json")


@pytest.mark.parametrize("datasets,expected", [
    (("('digits_train',)", "('digits_val',)"), DEFAULT_NAMES),
    (("('coco_2017_train',)", "('digits_val',)"), ("digits_val",)),
    (("('coco_2017_train',)", "('coco_2017_val',)"), ()),
])
def test_register_the_demo_sets_a_config_names(no_digits, tmp_path, datasets, expected):
    cfg = make_cfg("DATASETS.TRAIN", datasets[0], "DATASETS.TEST", datasets[1])
    assert register_digits_named_in(cfg, root=tmp_path) == expected
    assert [name for name in DEFAULT_NAMES if name in DatasetCatalog.list()] == list(expected)


def test_a_registered_demo_name_is_kept(no_digits, tmp_path):
    """A user's own registration (here at another root) wins over the default root."""
    register_digits(tmp_path / "mine")
    cfg = make_cfg("DATASETS.TRAIN", "('digits_train',)", "DATASETS.TEST", "('digits_val',)")
    assert register_digits_named_in(cfg, root=tmp_path / "default") == ()
    assert MetadataCatalog.get("digits_train").image_root.startswith(str(tmp_path.resolve() / "mine"))
