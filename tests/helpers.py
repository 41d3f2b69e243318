"""Shared test helpers: detectron2 configs with resnext_det's keys, random weights."""
import importlib.util
from pathlib import Path

import torch
from detectron2.layers import FrozenBatchNorm2d
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


def randomize_(module, seed=0):
    """Give every norm random statistics and affine terms, in place; returns the module.

    Default norms (mean 0, var 1, scale 1, bias 0) would hide a norm applied to the wrong
    channels or a missing one; random ones make every tensor count in a comparison.
    Convolution weights keep their (random) initialization. The last norm of each residual
    path gets a small scale (0.05-0.15), as trained ResNets have, so that activations stay
    of order one through a hundred layers and the detectors still predict boxes.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():
            if not _is_norm(mod):
                continue
            last = mod_name.endswith(("conv3.norm", "conv3_norm"))
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(mod, name, None)
                if not isinstance(tensor, torch.Tensor):
                    continue
                values = torch.rand(tensor.shape, generator=gen, dtype=torch.float64)
                if name == "weight" and last:
                    tensor.copy_(0.05 + 0.1 * values)
                elif name in ("weight", "running_var"):
                    tensor.copy_(0.5 + values)
                else:
                    tensor.copy_((values - 0.5) * 0.2)
    return module


def _is_norm(module):
    return isinstance(module, (FrozenBatchNorm2d, torch.nn.modules.batchnorm._NormBase,
                               torch.nn.GroupNorm))


def load_tool(name):
    """Import tools/<name>.py (tools/ holds scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
