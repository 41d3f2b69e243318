"""Write the same weights for any of the paper's block forms (a), (b), (c).

Key layout of one block under prefix P (see resnext_det/modeling/blocks.py):
  (c) P.conv1 [C*d, in]   P.conv2 [C*d, d, 3, 3] (groups=C)   P.conv3 [out, C*d]  (+ .norm)
  (b) P.paths.i.conv1 [d, in]   P.paths.i.conv2 [d, d, 3, 3]   P.conv3 [out, C*d]  (+ .norm)
  (a) P.paths.i.conv1 [d, in]   P.paths.i.conv2 [d, d, 3, 3]   P.paths.i.conv3 [out, d]
      and P.conv3_norm, the norm applied to the sum of the paths.
Path i of (a)/(b) is group i of (c): output channels [i*d, (i+1)*d) of conv1/conv2 and
input channels [i*d, (i+1)*d) of conv3. The shortcut is the same in all forms.
Every conversion goes through (c).
"""
import re

import torch

from ..modeling.blocks import BLOCK_FORMS

FORMS = tuple(BLOCK_FORMS)  # the paper's Figure 3 forms, as the model builds them
# Blocks are the children of the stages res2..res5 (C4's res5 sits in roi_heads): a box
# head's conv1..conv4 (NUM_CONV >= 3) is no block, though it has a conv2 and a conv3.
_BLOCK = r"(?:.*\.)?res[2-5]\.\d+"
_PATH_KEY = re.compile(rf"^({_BLOCK})\.paths\.(\d+)\.(conv[123])\.(.+)$")
_GROUPED_CONV2 = re.compile(rf"^({_BLOCK})\.conv2\.weight$")


def _split(tensor, parts, dim):
    if tensor.dim() == 0:  # num_batches_tracked: every path has its own copy
        return [tensor.clone() for _ in range(parts)]
    return [t.clone() for t in torch.chunk(tensor, parts, dim=dim)]


def _merge(tensors, dim):
    if tensors[0].dim() == 0:
        return tensors[0].clone()
    return torch.cat(tensors, dim=dim)


def to_grouped(state_dict):
    """Form (a) or (b) weights -> form (c) weights (a new dict; others keys kept)."""
    out, groups = {}, {}
    for key, value in state_dict.items():
        match = _PATH_KEY.match(key)
        if match is None:
            out[key] = value
            continue
        prefix, index, conv, rest = match.groups()
        groups.setdefault((prefix, conv, rest), {})[int(index)] = value
    for (prefix, conv, rest), by_index in groups.items():
        tensors = [by_index[i] for i in sorted(by_index)]
        dim = 1 if conv == "conv3" else 0  # (a)'s conv3 splits its inputs
        out[f"{prefix}.{conv}.{rest}"] = _merge(tensors, dim)
    for key in [k for k in out if ".conv3_norm." in k]:
        out[key.replace(".conv3_norm.", ".conv3.norm.")] = out.pop(key)
    return out


def _grouped_blocks(state_dict):
    """{prefix: cardinality} for every bottleneck block of form (c) in a state dict."""
    blocks = {}
    for key, value in state_dict.items():
        match = _GROUPED_CONV2.match(key)
        if match and f"{match.group(1)}.conv3.weight" in state_dict and value.dim() == 4:
            blocks[match.group(1)] = value.shape[0] // value.shape[1]
    return blocks


def from_grouped(state_dict, form):
    """Form (c) weights -> weights for `form` ("a", "b" or "c")."""
    if form not in FORMS:
        raise ValueError(f"block form {form!r} is not one of {FORMS}")
    if form == "c":
        return dict(state_dict)
    blocks, out = _grouped_blocks(state_dict), {}
    for key, value in state_dict.items():
        prefix, found, rest = key.partition(".conv")
        cardinality = blocks.get(prefix) if found else None
        conv, tail = "conv" + rest[:1], rest[2:]  # "1.norm.weight" -> "conv1", "norm.weight"
        if cardinality is None or (conv == "conv3" and form == "b"):
            out[key] = value
            continue
        if conv == "conv3" and tail.startswith("norm."):
            out[f"{prefix}.conv3_norm.{tail[len('norm.'):]}"] = value
            continue
        dim = 1 if conv == "conv3" else 0
        for i, part in enumerate(_split(value, cardinality, dim)):
            out[f"{prefix}.paths.{i}.{conv}.{tail}"] = part
    return out


def convert_block_form(state_dict, form):
    """Weights of any form -> weights of `form`; the function each form computes is kept."""
    return from_grouped(to_grouped(state_dict), form)
