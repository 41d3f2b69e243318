"""The weights catalog: well-formed data, the publishers' own metadata, lookup, verify, configs."""
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.config import get_cfg

import resnext_det
from resnext_det import parse_template
from resnext_det.checkpoint import ConversionError, catalog
from resnext_det.checkpoint.sources import (
    SOURCE_NAMES, caffe2, pretrainedmodels, pycls, torch7, torchvision)
from tests.helpers import load_tool
from tests.publisher_conventions import published_convention, same_convention

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("Base-"))
_HUB_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch/hub.py HASH_REGEX


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _convention(entry):
    return dict(input_format=entry.input_format, pixel_mean=list(entry.pixel_mean),
                pixel_std=list(entry.pixel_std))


# --- the data itself -------------------------------------------------------------------

def test_entries_are_well_formed():
    names = [e.name for e in catalog.CATALOG]
    assert len(names) == len(set(names)) and len(names) >= 40
    for e in catalog.CATALOG:
        parse_template(e.template)  # raises on a bad template
        assert e.url.rsplit("/", 1)[1] == e.file_name, e.name
        assert e.input_format in ("RGB", "BGR"), e.name
        assert len(e.pixel_mean) == 3 and len(e.pixel_std) == 3, e.name
        assert e.top1 is None or 50 < e.top1 < 100, e.name
        assert isinstance(e.stride_in_1x1, bool), e.name
        assert e.variant in (None, "detectron", "detectron2"), e.name
        assert (e.variant is not None) == (e.source_format == "caffe2"), e.name
        assert e.notes, f"{e.name}: every entry says where its facts come from"


def test_hash_prefixes_are_the_hub_convention():
    hashed = [e for e in catalog.CATALOG if e.hash_prefix is not None]
    assert {e.publisher for e in hashed} == {"pytorch/vision", "huggingface/pytorch-image-models",
                                             "Cadene/pretrained-models.pytorch"}
    for e in hashed:
        assert re.fullmatch(r"[0-9a-f]{8,}", e.hash_prefix), e.name
        assert _HUB_HASH.search(e.file_name).group(1) == e.hash_prefix, e.name


def test_formats_are_known_sources():
    for e in catalog.CATALOG:
        assert e.source_format in SOURCE_NAMES, e.name


def test_the_required_files_are_cataloged():
    files = {e.file_name for e in catalog.CATALOG}
    for name in ("resnet50-0676ba61.pth", "resnext101_64x4d-173b62eb.pth",
                 "resnext50_32x4d_a1h-0146ab0a.pth", "X-101-32x4d_dds_8gpu.pyth", "R-50.pkl",
                 "X-101-64x4d.pkl", "X-152-32x8d-IN5k.pkl", "resnext_101_64x4d.t7",
                 "resnet-152.t7", "resnext101_64x4d-e77a0586.pth"):
        assert name in files, name
    assert len(catalog.candidates("X-101-32x8d.pkl")) == 2


@pytest.mark.parametrize("entry", catalog.CATALOG, ids=lambda e: e.name)
def test_pixel_statistics_follow_the_publishers_convention(entry):
    """Channel order, pixel mean / std and stride placement as the publisher's installed
    code states them (tests/publisher_conventions.py), not our sources/base.py constants."""
    published = published_convention(entry)
    assert same_convention(dict(_convention(entry), stride_in_1x1=entry.stride_in_1x1),
                           published), (entry.name, published)


def test_torchvision_entries_match_installed_torchvision():
    import torchvision.models as tvm

    for e in catalog.TORCHVISION:
        arch, tag = e.name.split("/")[1].split(".")
        weights = tvm.get_model_weights(arch)[tag]
        assert weights.url.rsplit("/", 1)[1] == e.file_name
        assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == pytest.approx(e.top1)
        transform = weights.transforms()
        assert np.allclose(np.array(transform.mean) * 255, e.pixel_mean)
        assert np.allclose(np.array(transform.std) * 255, e.pixel_std)
        assert parse_template(e.template).depth == int(re.search(r"\d+", arch).group())


def test_timm_entries_match_installed_timm():
    timm_models = pytest.importorskip("timm.models")
    for e in catalog.TIMM:
        cfg = timm_models.get_pretrained_cfg(e.name.split("/", 1)[1]).to_dict()
        assert cfg["url"].rsplit("/", 1)[1] == e.file_name
        assert np.allclose(np.array(cfg["mean"]) * 255, e.pixel_mean)
        assert np.allclose(np.array(cfg["std"]) * 255, e.pixel_std)
        assert cfg.get("license") == e.license


def test_the_converters_defaults_are_the_publishers_convention():
    """The converter's rules (per source; Caffe2: per layout and C) give what each file's
    publisher states (tests/publisher_conventions.py), for every cataloged file."""
    groups = [(torchvision, catalog.TORCHVISION + catalog.TIMM), (pycls, catalog.PYCLS),
              (torch7, catalog.TORCH7), (pretrainedmodels, catalog.PRETRAINEDMODELS)]
    for source, entries in groups:
        for e in entries:
            defaults = source.defaults({}, parse_template(e.template))
            assert same_convention(defaults, published_convention(e)), e.name
    for e in catalog.CAFFE2:
        defaults = caffe2.defaults({}, parse_template(e.template), variant=e.variant)
        assert same_convention(defaults, published_convention(e)), e.name


def test_metadata_has_the_converter_override_keys():
    entry = catalog.get("pycls/X-50-32x4d")
    meta = catalog.metadata(entry)
    assert set(meta) == set(catalog.METADATA_KEYS)
    assert same_convention(meta, published_convention(entry))
    assert isinstance(meta["pixel_std"], list)


# --- lookup and verify ------------------------------------------------------------------

def test_lookup_by_base_name():
    entry = catalog.lookup("/cache/torch/hub/checkpoints/resnext50_32x4d-7cdf4587.pth")
    assert entry.name == "torchvision/resnext50_32x4d.IMAGENET1K_V1"
    assert catalog.lookup("pretrained/resnext50_32x4d.pth") is None  # re-saved: not the file
    # A unique name is found whatever the format, so that verify can report the mismatch.
    entry = catalog.lookup("resnet-101.t7", source_format="torchvision")
    assert entry.name == "fb.resnet.torch/resnet-101"


def test_lookup_disambiguates_x101_32x8d_by_variant():
    assert catalog.lookup("X-101-32x8d.pkl") is None
    assert catalog.lookup("X-101-32x8d.pkl", "caffe2") is None  # both are Caffe2
    d1 = catalog.lookup("/w/X-101-32x8d.pkl", "caffe2", "detectron")
    d2 = catalog.lookup("/w/X-101-32x8d.pkl", "caffe2", "detectron2")
    assert (d1.name, d2.name) == ("detectron/FAIR/X-101-32x8d", "detectron2/FAIR/X-101-32x8d")
    assert d1.pixel_std == (1.0, 1.0, 1.0) and d2.pixel_std == (57.375, 57.12, 58.395)
    assert catalog.lookup("R-50.pkl", "resnext_det").name == "detectron2/torchvision/R-50"
    assert catalog.lookup("R-50.pkl", "caffe2", "detectron").name == "detectron/MSRA/R-50"


def test_verify_raises_on_a_wrong_hash_naming_both(tmp_path):
    entry = catalog.get("torchvision/resnet50.IMAGENET1K_V1")
    path = tmp_path / "download.tmp"
    path.write_bytes(b"not the resnet50 weights")
    path = path.rename(tmp_path / entry.file_name)  # a cataloged name; its sha256 cannot match
    assert catalog.lookup(path) == entry
    sha = _sha256(path)
    with pytest.raises(ConversionError) as info:
        catalog.verify(entry, path, sha, "torchvision", "R50")
    message = str(info.value)
    assert "0676ba61" in message and sha in message and entry.name in message
    assert "format" not in message and "template" not in message


def test_verify_names_format_template_and_variant(tmp_path):
    entry = catalog.get("detectron2/FAIR/X-101-32x8d")
    with pytest.raises(ConversionError) as info:
        catalog.verify(entry, tmp_path / entry.file_name, None, "torchvision",
                       parse_template("X101_64x4d"), variant="detectron")
    message = str(info.value)
    assert "format: catalog caffe2, file torchvision" in message
    assert "template: catalog X101_32x8d, file X101_64x4d" in message
    assert "variant: catalog detectron2, file detectron" in message


def test_verify_accepts_the_right_file(tmp_path):
    path = tmp_path / "resnext_101_32x4d.t7"
    path.write_bytes(b"torch7")
    entry = catalog.lookup(path, "torch7")
    catalog.verify(entry, path, None, "torch7", "X101_32x4d")  # no hash in the name
    sha = _sha256(path)
    hashed = dataclasses.replace(catalog.get("timm/resnet50.a1_in1k"), hash_prefix=sha[:8])
    catalog.verify(hashed, path, sha.upper(), "torchvision", parse_template("R50"))


# --- configs, table, tools, README ------------------------------------------------------

def _catalog_name(path):
    match = re.search(r"^\s*# catalog: (\S+)", path.read_text(), flags=re.M)
    return match and match.group(1)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_names_an_entry_that_fits_it(path):
    cfg = resnext_det.add_resnext_config(get_cfg())
    cfg.merge_from_file(str(path))
    if not cfg.MODEL.WEIGHTS:
        pytest.skip(f"{path.name} starts from scratch")
    name = _catalog_name(path)
    assert name, f"{path.name}: a '# catalog: <entry>' comment next to MODEL.WEIGHTS"
    entry = catalog.get(name)
    assert parse_template(entry.template) == parse_template(cfg.MODEL.RESNEXT.TEMPLATE)
    assert cfg.INPUT.FORMAT == entry.input_format
    assert np.allclose(cfg.MODEL.PIXEL_STD, entry.pixel_std)
    assert np.allclose(cfg.MODEL.PIXEL_MEAN, entry.pixel_mean)
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 == entry.stride_in_1x1


def test_tables_list_every_entry():
    text, markdown = catalog.table().splitlines(), catalog.table(markdown=True).splitlines()
    assert len(text) == len(markdown) == len(catalog.CATALOG) + 2
    assert text[0].split() == list(catalog.COLUMNS)
    assert markdown[0] == "| " + " | ".join(catalog.COLUMNS) + " |"
    row = next(line for line in markdown if "resnext_101_32x4d.t7" in line)
    assert row.split(" | ")[2:] == ["torch7", "X101_32x4d", "RGB", "58.395/57.12/57.375", "3x3",
                                    "78.8", "CC-BY-NC-4.0 |"]


def test_convert_weights_list(capsys):
    tool = load_tool("convert_weights")
    assert tool.main(["--list"]) == 0
    assert capsys.readouterr().out.strip() == catalog.table()
    with pytest.raises(SystemExit):
        tool.main([])  # SRC and OUT are required without --list


def test_weights_table_tool(tmp_path, capsys):
    tool = load_tool("weights_table")
    assert tool.main([]) == 0
    table = capsys.readouterr().out.strip()
    assert table == catalog.table(markdown=True)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tool.BEGIN}\n{table}\n{tool.END}\nrest\n")
    assert tool.main(["--check", str(readme)]) == 0
    readme.write_text(f"{tool.BEGIN}\n| stale |\n{tool.END}\n")
    assert tool.main(["--check", str(readme)]) == 1
    for text in ("no block\n", f"{tool.END}\n{table}\n{tool.BEGIN}\n"):  # none; in reverse
        readme.write_text(text)
        capsys.readouterr()
        assert tool.main(["--check", str(readme)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {readme}: no {tool.BEGIN}")
    readme.write_bytes(b"\xff\xfe not UTF-8")  # these three were tracebacks, exit 1
    for path, reason in ((readme, "not UTF-8 text"), (tmp_path / "gone.md", "No such file"),
                         (tmp_path, "Is a directory")):
        capsys.readouterr()
        assert tool.main(["--check", str(path)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {path}: cannot be read ({reason}")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_the_table_to_a_full_disk_is_one_error_line():
    """`tools/weights_table.py > file` on a full disk was an OSError traceback, exit 1."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(ROOT / "tools/weights_table.py")], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.rstrip().endswith("error: cannot write the table (No space left on device)")


def test_readme_table_is_the_generated_one():
    tool = load_tool("weights_table")
    block = tool.readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md has no <!-- weights-table:begin/end --> block"
    assert block == catalog.table(markdown=True), "run tools/weights_table.py and paste its output"
