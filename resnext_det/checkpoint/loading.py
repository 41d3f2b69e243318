"""The one way in for weights: read a file once, decide, convert if foreign, cache.

`load_weights(path)` is what every loader of ours calls (the detection checkpointer, the
classification trainer, MODEL.RESNEXT.CONFIG_FROM_WEIGHTS). It reads the bytes once; the
SHA-256 of those bytes and a fingerprint of the converting code name the conversion
cache entry, so a cache hit parses nothing but the cached file, and a conversion made by
other code is never reused; an entry that cannot be read is converted again. Files in
our naming (our .pkl, detectron2 checkpoints of our models, training checkpoints) come
back as detectron2's checkpointer expects them;
files in a foreign naming are converted (convert.py) and written to the cache; a file
that fits no known layout is an error, never handed on to a lenient loader.
"""
import functools
import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..utils.io import atomic_write
from .convert import AUTHOR, convert_weights, detectron2_checkpoint
from .detect import detect_source, unwrap
from .readers import WeightsFileError, read_weights

logger = logging.getLogger(__name__)
CACHE_FOLDER = "converted_weights"


def cache_dir_for(output_dir):
    """Where conversions of MODEL.WEIGHTS are cached for a run writing to `output_dir`."""
    return os.path.join(output_dir or ".", CACHE_FOLDER)


# The code a conversion's output depends on: checkpoint/, and modeling/, whose templates,
# block forms and model (template_infer, block_forms, validate import them) name the
# template and the keys it writes and give the shapes it checks them against.
CONVERTER_CODE = ("checkpoint", "modeling")


def code_fingerprint(root, folders=CONVERTER_CODE):
    """First 8 hex of the SHA-256 of every .py file under root/<folder>, names and bytes."""
    digest = hashlib.sha256()
    for folder in folders:
        for source in sorted((Path(root) / folder).rglob("*.py")):
            name = source.relative_to(root).as_posix().encode()
            digest.update(name + b"\0" + source.read_bytes())
    return digest.hexdigest()[:8]


@functools.lru_cache(maxsize=None)
def converter_fingerprint():
    """`code_fingerprint` of the converting code in this package: part of a cache entry's
    name, so a conversion made by other code (an older release, a converter or template
    table fixed since) is never reused but converted again."""
    return code_fingerprint(Path(__file__).parents[1])


def cached_path(weights, cache_dir, convert_kwargs=None):
    """<cache_dir>/<file name>-<file sha256[:12]>-<converter_fingerprint>[-<options>].pkl."""
    base = os.path.splitext(os.path.basename(weights.path))[0]
    options = {k: v for k, v in sorted((convert_kwargs or {}).items()) if v not in (None, False)}
    tag = f"-{hashlib.sha256(repr(options).encode()).hexdigest()[:6]}" if options else ""
    return os.path.join(cache_dir, f"{base}-{weights.sha256[:12]}-{converter_fingerprint()}{tag}.pkl")


@dataclass
class LoadedWeights:
    """A checkpoint dict as detectron2's checkpointer loads it, and where it came from.

    Attributes:
        checkpoint: {"model": state dict, ...}; also "__author__", "matching_heuristics"
            and our metadata under "resnext_det" for converted files, and the other
            checkpointables (optimizer, scheduler, iteration) of training checkpoints.
        metadata: the "resnext_det" metadata dict, or None when the file carries none.
        source_format: the detected naming ("resnext_det" for ours).
        converted_to: the cache file a foreign file was converted into, else None.
        report: the ConversionReport of a conversion made now, else None.
    """

    checkpoint: dict
    metadata: Optional[dict]
    source_format: str
    converted_to: Optional[str] = None
    report: object = field(default=None, repr=False)


def _bare_naming(state):
    """True when keys lack a detector prefix (stem.*, res2.*): detectron2 matches by suffix."""
    return any(str(k).startswith(("stem.", "res2.")) for k in state)


def as_checkpoint(obj, container, path):
    """(checkpoint dict, source name) of a loaded object in our naming, or None if foreign."""
    if isinstance(obj, dict) and obj.get("__author__") == AUTHOR and isinstance(obj.get("model"), dict):
        return obj, "resnext_det"
    state, wrapper = unwrap(obj, container, path)
    source = detect_source(state, wrapper, path)
    if source.name != "resnext_det":
        return None, source.name
    checkpoint = dict(obj) if isinstance(obj, dict) and "model" in obj else {"model": dict(state)}
    if _bare_naming(checkpoint["model"]):
        checkpoint["matching_heuristics"] = True
    return checkpoint, source.name


# The last file loaded with remember=True, kept for the next load, if it is of the same
# file: MODEL.RESNEXT.CONFIG_FROM_WEIGHTS reads the weights before the model exists, the
# checkpointer loads them after, and the file is read once for both. Any other load
# drops it (a --resume loads the run's checkpoint instead).
_REMEMBERED = {}


def _memo_key(path, cache_dir, trust_pickle, convert_kwargs):
    """The file as it is now: a file replaced since has another inode or change time, even
    one of the same size with the old mtime (cp -p, rsync -a and tar keep mtimes; no tool
    sets the change time)."""
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
            cache_dir, trust_pickle, repr(sorted(convert_kwargs.items())))


def load_weights(path, *, cache_dir=None, trust_pickle=False, remember=False, **convert_kwargs):
    """`_load_weights`, reusing (once, at the next load) a result that an earlier call asked
    to remember."""
    key = _memo_key(path, cache_dir, trust_pickle, convert_kwargs) if os.path.isfile(path) else None
    loaded = _REMEMBERED.pop(key, None)
    _REMEMBERED.clear()
    if loaded is None:
        loaded = _load_weights(path, cache_dir=cache_dir, trust_pickle=trust_pickle, **convert_kwargs)
    if remember:
        _REMEMBERED[key] = loaded
    return loaded


def _read_cached(cached, path):
    """The checkpoint the cache entry `cached` holds, or None: there is none, or it cannot
    be used (cut short: a full disk, a copy of the output folder stopped midway; not a
    conversion of ours), which is warned about, and `path` is converted again over it."""
    if not os.path.isfile(cached):
        return None
    try:
        checkpoint = read_weights(cached).obj
    except WeightsFileError as e:
        problem = e.problem
    else:
        meta = checkpoint.get(AUTHOR) if isinstance(checkpoint, dict) else None
        if isinstance(meta, dict) and "source_format" in meta and isinstance(
                checkpoint.get("model"), dict):
            return checkpoint
        problem = "not a conversion of ours (no model and metadata)"
    logger.warning(f"{cached}, the cached conversion of {path}: {problem}; it is converted again.")
    return None


def _load_weights(path, *, cache_dir=None, trust_pickle=False, **convert_kwargs):
    """Read `path` once and return it as a LoadedWeights, converting a foreign file.

    Args:
        path (str): any file that tools/convert_weights.py reads, or a checkpoint of ours.
        cache_dir (str or None): where a foreign file's conversion is cached (reused when
            the same bytes come again); None: convert in memory only.
        trust_pickle (bool): unpickle in full (runs code the file carries); readers.py.
        convert_kwargs: keep_fc, caffe2_preset, block_form, ... of `convert_weights`.
    Raises:
        ConversionError (a UserError) naming the file: unreadable, unsafe, or not a
        layout we know.
    """
    weights = read_weights(path, trust_pickle=trust_pickle)
    cached = cached_path(weights, cache_dir, convert_kwargs) if cache_dir else None
    checkpoint = _read_cached(cached, path) if cached else None
    if checkpoint is not None:
        return LoadedWeights(checkpoint, checkpoint.get(AUTHOR), checkpoint[AUTHOR]["source_format"],
                             converted_to=cached)
    checkpoint, source = as_checkpoint(weights.obj, weights.container, weights.path)
    if checkpoint is not None:
        return LoadedWeights(checkpoint, checkpoint.get(AUTHOR), source)
    result = convert_weights(weights, **convert_kwargs)
    checkpoint = detectron2_checkpoint(result)
    if cached:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            atomic_write(cached, lambda f: pickle.dump(checkpoint, f))
        except OSError as e:  # the conversion is in memory: the cache only saves time
            logger.warning(f"Cannot cache the conversion of {path} in {cache_dir} ({e.strerror}): "
                           "it is converted again next time.")
            cached = None
    return LoadedWeights(checkpoint, checkpoint[AUTHOR], source, converted_to=cached,
                         report=result.report)
