"""Shared test helpers: detectron2 configs with resnext_det's keys, the tools as modules.

Random norm statistics and relative errors: resnext_det.utils.testing (benchmarks/ uses
them too)."""
import importlib.util
import logging
from contextlib import contextmanager
from pathlib import Path

from detectron2.config import get_cfg

import resnext_det


def make_cfg(*overrides, backbone="build_resnext_backbone"):
    """A detectron2 config on the CPU with MODEL.RESNEXT and `KEY VALUE` overrides."""
    cfg = get_cfg()
    resnext_det.add_resnext_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.merge_from_list(list(overrides))
    return cfg


def load_tool(name):
    """Import tools/<name>.py (tools/ holds scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def captured(name):
    """The messages logged to `name` (INFO and up), whatever handlers earlier tests set up."""
    records, handler = [], logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    log = logging.getLogger(name)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
