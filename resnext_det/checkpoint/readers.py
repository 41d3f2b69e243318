"""Open a weights file by its CONTENT (magic bytes), never by its file name.

  b"PK\\x03\\x04"           torch.save zip archive (torch >= 1.6): .pth, .pyth, .bin
  b"\\x80"                  a pickle: Caffe2 Detectron .pkl, detectron2 .pkl, or
                            torch.save's legacy (pre-1.6) format, which starts with a
                            pickled magic number
  8-byte length + b"{"     safetensors (timm, Hugging Face)
  int 4, index, "V 1"      Torch7 binary .t7 (a serialized torch class, e.g. nn.Sequential)
"""
import pickle
import struct

import torch

from .errors import ConversionError

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
CONTAINERS = ("torch-zip", "pickle", "torch-legacy", "safetensors", "torch7")


def sniff_container(path):
    """The container of a file, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:4] == struct.pack("<i", 4) and head[8:15] == struct.pack("<i", 3) + b"V 1":
        return "torch7"
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "safetensors"
    if head.startswith(b"\x80"):
        return _pickle_kind(path)
    raise ConversionError(f"{path}: unknown weights container (first bytes {head[:8]!r}); "
                          f"known: {', '.join(CONTAINERS)}")


def _pickle_kind(path):
    with open(path, "rb") as f:
        first = pickle.load(f, encoding="latin1")
    return "torch-legacy" if first == _TORCH_LEGACY_MAGIC else "pickle"


def _load_torch7(path):
    import torchfile  # optional: only the Torch7 reader needs it

    return torchfile.load(path)


def _load_safetensors(path):
    from safetensors.torch import load_file

    return load_file(path)


def _load_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _load_torch(path, container="torch-zip"):
    # weights_only: a weights file has no business running code on load. mmap (zip
    # archives only): tensors are read when used, so sniffing a large checkpoint's keys
    # before DetectionCheckpointer loads it does not read the file twice.
    try:
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=container == "torch-zip")
    except pickle.UnpicklingError as e:
        raise ConversionError(f"{path}: torch.load(weights_only=True) refused it: {e}") from e


_LOADERS = {"torch-zip": _load_torch,
            "torch-legacy": lambda path: _load_torch(path, "torch-legacy"), "pickle": _load_pickle,
            "safetensors": _load_safetensors, "torch7": _load_torch7}


def read_weights_file(path):
    """(container, loaded object) of a weights file of any supported container."""
    container = sniff_container(path)
    return container, _LOADERS[container](path)
