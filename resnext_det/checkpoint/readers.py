"""Read a weights file once, decide its container by CONTENT (never by name), load it safely.

  b"PK\\x03\\x04"           torch.save zip archive (torch >= 1.6): .pth, .pyth, .bin
  b"\\x80\\x02\\x8a\\x0a" + magic  torch.save's legacy (pre-1.6) format: a pickled magic number
  b"\\x80"                  any other pickle: Caffe2 Detectron .pkl, detectron2 / our .pkl
  8-byte length + b"{"     safetensors (timm, Hugging Face)
  int 4, index, "V 1"      Torch7 binary .t7 (a serialized torch class, e.g. nn.Sequential)

The bytes are read once; the SHA-256 (for the conversion cache and the catalog's hash
check) and the parse share them. Nothing a file holds is executed: torch files load with
torch.load(weights_only=True), plain pickles with `WeightsUnpickler`, which admits only
what weights hold. `trust_pickle=True` lifts both restrictions (with a warning).
"""
import hashlib
import io
import logging
import os
import pickle
import re
import struct
import sys
import tempfile
import types
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ConversionError

logger = logging.getLogger(__name__)

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
CONTAINERS = ("torch-zip", "torch-legacy", "pickle", "safetensors", "torch7")
TRUST_HINT = ("If you made this file or trust its origin, allow it with "
              "MODEL.RESNEXT.WEIGHTS_TRUST_PICKLE True (tools: --trust-pickle); that runs "
              "whatever code the file carries.")


class WeightsFileError(ConversionError):
    """A weights file that cannot be read: missing, empty, truncated, unknown, unsafe."""

    def __init__(self, path, problem, fix):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}. {fix}")


class UnreadableFileError(WeightsFileError):
    """Missing, empty, truncated or damaged: another copy of the file may be readable."""


def _damaged(path, what, detail):
    """The UnreadableFileError of a cut or damaged file: "a truncated or damaged <what>"."""
    return UnreadableFileError(path, f"a truncated or damaged {what} ({detail})",
                               "Copy or download it again")


def _numpy_globals():
    import collections

    if int(np.__version__.split(".")[0]) >= 2:  # numpy 2 renamed numpy.core to numpy._core
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode,
               ("collections", "OrderedDict"): collections.OrderedDict}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """`_codecs.encode`, which Python 3 pickles of bytes call; only text encodings."""
    return str(text).encode(encoding, errors)


class WeightsUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, strings, numbers and numpy arrays, nothing else.

    That is everything a Caffe2 Detectron pickle (Python 2, read as latin1), detectron2's
    model-zoo .pkl and our converted .pkl hold. Any other global (os.system, a class of
    some library) is refused before it is looked up, so a crafted file runs no code.
    """

    _allowed = None

    def find_class(self, module, name):
        if WeightsUnpickler._allowed is None:
            WeightsUnpickler._allowed = _numpy_globals()
        try:
            return WeightsUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def sniff_container(head, path="<bytes>"):
    """The container of a file from its first 16+ bytes (a path is read for its head)."""
    if isinstance(head, (str, os.PathLike)):
        path = head
        with open(path, "rb") as f:
            head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:4] == struct.pack("<i", 4) and head[8:15] == struct.pack("<i", 3) + b"V 1":
        return "torch7"
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "safetensors"
    if head[:4] == b"\x80\x02\x8a\x0a" and int.from_bytes(head[4:14], "little") == _TORCH_LEGACY_MAGIC:
        return "torch-legacy"
    if head.startswith(b"\x80"):
        return "pickle"
    looks = " (it looks like an HTML page: a failed download?)" if head.lstrip()[:1] == b"<" else ""
    raise UnreadableFileError(
        path, f"not a weights file{looks}: its first bytes {head[:8]!r} match none of "
        f"{', '.join(CONTAINERS)}", "Check the path, or download the file again")


# What a cut or damaged file makes the unpicklers raise, besides their own errors: a short
# struct read, a bad memo index or key, absurd sizes.
_DAMAGE = (EOFError, ValueError, OSError, RuntimeError, struct.error, LookupError, MemoryError,
           OverflowError, TypeError, AttributeError)
# torch's weights_only refusal names the global it met: "Unsupported global: GLOBAL os.system"
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: )?GLOBAL ([A-Za-z_][\w.]*\.[A-Za-z_]\w*)")


def _cut_name(qualified):
    """Whether `qualified` ("collections.O", "torch._utils") is a name cut short in a module
    already imported (a file cut inside a GLOBAL): no such attribute, or a module where a
    GLOBAL names a function or class. Nothing is imported to tell."""
    module, _, name = qualified.rpartition(".")
    if module not in sys.modules:
        return False
    found = getattr(sys.modules[module], name, None)
    return found is None or isinstance(found, types.ModuleType)


def _load_torch(data, path, trust):
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        # torch's own message ends with advice to pass weights_only=False; ours names the
        # global and the explicit opt-in instead. A refusal without a real module.name
        # global (GLOBAL ". ..." of a cut file) is damage, not an object to trust.
        found = next((m for m in map(_REFUSED_GLOBAL.search, str(e).splitlines()) if m), None)
        if found is None or _cut_name(found.group(1)):
            raise _damaged(path, "torch file", _first_line(e)) from None
        raise WeightsFileError(path, f"holds Python objects a weights file does not need "
                               f"({found.group(0)})", TRUST_HINT) from None
    except _DAMAGE as e:
        raise _damaged(path, "torch file", _first_line(e)) from None


def _load_pickle(data, path, trust):
    unpickler = (pickle.Unpickler if trust else WeightsUnpickler)(io.BytesIO(data), encoding="latin1")
    try:
        return unpickler.load()
    except pickle.UnpicklingError as e:
        if "is not allowed" in str(e):
            raise WeightsFileError(path, f"a pickle that holds more than weights ({e})",
                                   TRUST_HINT) from None
        raise _damaged(path, "pickle", e) from None
    except _DAMAGE as e:
        raise _damaged(path, "pickle", _first_line(e)) from None


def _load_safetensors(data, path, trust):
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as e:  # safetensors raises its own SafetensorError (not exported)
        raise _damaged(path, "safetensors file", _first_line(e)) from None


def _load_torch7(data, path, trust):
    import torchfile  # optional: only the Torch7 reader needs it

    # torchfile reads storages with numpy.fromfile, which needs an OS file: the bytes
    # already read go to an in-memory file (memfd on Linux), not back to the disk file.
    memfd = getattr(os, "memfd_create", None)
    try:
        with (os.fdopen(memfd("t7"), "w+b") if memfd else tempfile.TemporaryFile()) as f:
            f.write(data)
            f.seek(0)
            obj = torchfile.T7Reader(f).read_obj()
    except (torchfile.T7ReaderException, struct.error, ValueError, EOFError) as e:
        raise _damaged(path, "Torch7 file", _first_line(e)) from None
    _check_t7_extents(obj, path)
    return obj


def _t7_arrays(obj, seen):
    """Every numpy array in a torchfile tree (tables, lists, TorchObjects), each once."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (dict, list, tuple)):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from _t7_arrays(value, seen)
    elif isinstance(getattr(obj, "_obj", None), dict):  # torchfile.TorchObject
        yield from _t7_arrays(obj._obj, seen)


def _check_t7_extents(obj, path):
    """Each tensor lies inside its storage. torchfile reads a storage with numpy.fromfile,
    which returns fewer values at the end of a cut file without a word, and builds the
    tensor with as_strided over it: the cut tensor's values would be whatever memory
    follows."""
    for array in _t7_arrays(obj, set()):
        owner = array
        while getattr(owner, "base", None) is not None:
            owner = owner.base
        if not isinstance(owner, np.ndarray) or owner is array:
            continue
        low, high = _byte_bounds(array)
        owner_low, owner_high = _byte_bounds(owner)
        if low < owner_low or high > owner_high:
            raise UnreadableFileError(path, f"a truncated Torch7 file (a tensor of shape "
                                      f"{tuple(array.shape)} needs {high - owner_low} bytes of "
                                      f"its storage, which holds {owner_high - owner_low})",
                                      "Copy or download it again")


_byte_bounds = getattr(np, "byte_bounds", None) or np.lib.array_utils.byte_bounds


def _first_line(error):
    """'Type: first sentence' of an error from a library, for our one-line messages."""
    text = (str(error).strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(error).__name__}: {text}"


_LOADERS = {"torch-zip": _load_torch, "torch-legacy": _load_torch, "pickle": _load_pickle,
            "safetensors": _load_safetensors, "torch7": _load_torch7}


@dataclass
class WeightsFile:
    """One read of a weights file: its bytes, their SHA-256, its container, its content.

    `obj` is parsed from the bytes on first use, so a caller that only needs the hash (a
    conversion-cache hit) parses nothing.
    """

    path: str
    data: bytes = field(repr=False)
    sha256: str
    container: str
    trust_pickle: bool = False
    _obj: object = field(default=None, repr=False)

    @property
    def obj(self):
        if self._obj is None:
            if self.trust_pickle and self.container in ("pickle", "torch-zip", "torch-legacy"):
                logger.warning(f"{self.path}: unpickled with WEIGHTS_TRUST_PICKLE: any code it "
                               "carries runs now")
            self._obj = _LOADERS[self.container](self.data, self.path, self.trust_pickle)
        return self._obj


def read_weights(path, *, trust_pickle=False):
    """Read `path` once; a WeightsFileError names the file and what to do when it can't be."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UnreadableFileError(path, "no such file", "Check the path (MODEL.WEIGHTS or the "
                                  "command's argument)")
    if os.path.isdir(path):
        raise WeightsFileError(path, "is a folder, not a weights file",
                               "Point at the file inside it (.pth, .pkl, .pyth, .safetensors, .t7)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:  # permissions, a vanished network mount, ...
        raise UnreadableFileError(path, f"cannot be read ({e.strerror})",
                                  "Check its permissions, or copy it somewhere readable") from None
    if not data:
        raise UnreadableFileError(path, "is empty (0 bytes): an interrupted copy, download or "
                                  "save", "Copy or download it again")
    container = sniff_container(data[:16], path)
    return WeightsFile(path, data, hashlib.sha256(data).hexdigest(), container, trust_pickle)


def read_weights_file(path, *, trust_pickle=False):
    """(container, loaded object) of a weights file of any supported container."""
    weights = read_weights(path, trust_pickle=trust_pickle)
    return weights.container, weights.obj
