"""A DetectionCheckpointer whose MODEL.WEIGHTS may be a file of any supported format.

Files in a foreign naming (torchvision, timm, pycls, Caffe2, Torch7) are converted on
load and cached as <cache_dir>/<basename>-<sha256 of the file, 12 hex>.pkl, by default
<save_dir>/converted_weights/ (save_dir is the trainer's OUTPUT_DIR); a cached file is
reused, never re-converted. Files in our naming (our .pkl, detectron2 training
checkpoints to resume from) load as DetectionCheckpointer loads them. With `cfg`, the
config is checked against the weights' metadata and each mismatch logged on one line.
"""
import hashlib
import os
import pickle

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.io import atomic_write
from .convert import AUTHOR, convert_weights, detectron2_checkpoint
from .detect import detect_source, unwrap
from .metadata import check_config
from .readers import read_weights_file


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_path(path, cache_dir):
    """Where the conversion of `path` is cached: <cache_dir>/<basename>-<hash>.pkl."""
    base = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(cache_dir, f"{base}-{file_sha256(path)[:12]}.pkl")


def needs_conversion(path):
    """True for a foreign-format file; False for ours, detectron2's and anything else."""
    try:
        container, obj = read_weights_file(path)
        if isinstance(obj, dict) and obj.get("__author__") == AUTHOR:
            return False
        return detect_source(*unwrap(obj, container)).name != "resnext_det"
    except Exception:  # unreadable or unknown here: DetectionCheckpointer decides (and raises)
        return False


def convert_cached(path, cache_dir, **convert_kwargs):
    """The path of `path` converted to our .pkl, converting only on a cache miss."""
    out = cached_path(path, cache_dir)
    if not os.path.exists(out):
        os.makedirs(cache_dir, exist_ok=True)
        data = detectron2_checkpoint(convert_weights(path, **convert_kwargs))
        atomic_write(out, lambda f: pickle.dump(data, f))  # readers never see half a file
    return out


class ResNeXtCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer + on-load conversion, caching and the metadata check.

    `last_incompatible` holds the missing / unexpected / mis-shaped keys of the last load.
    """

    def __init__(self, model, save_dir="", *, cfg=None, cache_dir=None, convert_kwargs=None,
                 **checkpointables):
        """
        Args:
            cfg: a detectron2 config; when given, loaded metadata is checked against it.
            cache_dir: where conversions are cached (default <save_dir>/converted_weights).
            convert_kwargs: arguments of `convert_weights` (keep_fc, caffe2_preset, ...).
        """
        super().__init__(model, save_dir, **checkpointables)
        self.cfg, self.convert_kwargs = cfg, dict(convert_kwargs or {})
        self.cache_dir = cache_dir or os.path.join(save_dir or ".", "converted_weights")
        self.last_incompatible = None

    def _load_file(self, filename):
        if needs_conversion(filename):
            converted = convert_cached(filename, self.cache_dir, **self.convert_kwargs)
            self.logger.info(f"Converted {filename} -> {converted}")
            filename = converted
        loaded = super()._load_file(filename)
        if self.cfg is not None and AUTHOR in loaded:
            check_config(self.cfg, loaded[AUTHOR])
        return loaded

    def _load_model(self, checkpoint):
        self.last_incompatible = super()._load_model(checkpoint)
        return self.last_incompatible
