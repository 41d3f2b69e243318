"""Resumable checkpoints written atomically, and the weights file a detector starts from.

Every file is written to a temporary name in the same folder, flushed to disk and then
renamed over its target (os.replace is atomic on POSIX and Windows), and the
`last_checkpoint` pointer (fvcore's name, holding the file's basename) is replaced the
same way after the checkpoint is complete; a crash during any write leaves the previous
latest checkpoint and pointer intact.

A checkpoint is a dict that torch.load(weights_only=True) reads:
  model            classifier state dict: stem.*, res2.* .., linear.* (our naming)
  optimizer, scheduler, iteration, epoch, iters_per_epoch, rng, classes, config
  matching_heuristics, resnext_det   (ImageNet-style models) what MODEL.WEIGHTS of a
                   detector needs: detectron2 matches stem.*/res*.* to the backbone by
                   suffix, and ResNeXtCheckpointer checks the config against the metadata.
At the end of training, model_final.pkl holds the weights alone in detectron2's .pkl
format (the converter's: numpy arrays, "__author__": "resnext_det", metadata), the file
to pass as MODEL.WEIGHTS.
"""
import glob
import logging
import os
import pickle
import random

import numpy as np
import torch

from ..checkpoint import WeightsMismatchError, load_weights
from ..checkpoint.convert import detectron2_weights
from ..checkpoint.readers import UnreadableFileError, read_weights
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)
LAST = "last_checkpoint"


def rng_state():
    """torch / numpy / python RNG states, in types torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class CheckpointFiles:
    """The checkpoints of one OUTPUT_DIR: save (atomically), find the last one, load."""

    def __init__(self, folder, max_to_keep=0):
        self.folder, self.max_to_keep = folder, max_to_keep

    def path(self, name):
        return os.path.join(self.folder, name)

    def save(self, name, checkpoint):
        os.makedirs(self.folder, exist_ok=True)
        atomic_write(self.path(name), lambda f: torch.save(checkpoint, f))
        atomic_write(self.path(LAST), lambda f: f.write(name.encode()))
        logger.info(f"Saved checkpoint {self.path(name)} (iteration {checkpoint['iteration']})")
        self._remove_old()
        return self.path(name)

    def _remove_old(self):
        """Delete periodic checkpoints beyond the newest max_to_keep (0: keep all)."""
        periodic = sorted(glob.glob(self.path("model_[0-9]*.pth")))
        for path in periodic[:-self.max_to_keep] if self.max_to_keep else []:
            os.remove(path)

    def save_weights(self, name, state_dict, metadata):
        """model_final.pkl: the weights to pass as MODEL.WEIGHTS of a detector."""
        data = detectron2_weights(state_dict, metadata)
        return atomic_write(self.path(name), lambda f: pickle.dump(data, f))

    def last(self):
        """Path of the checkpoint the pointer names, or None when there is none."""
        pointer = self.path(LAST)
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            return self.path(f.read().strip())

    def last_readable(self):
        """(path, checkpoint) of the newest checkpoint that reads, or (None, None).

        The pointer's file first, then every other model_*.pth, newest first (a kill between
        a checkpoint and its pointer leaves a newer file than the pointer names); each one
        that cannot be read is skipped with a warning naming it.
        """
        named = self.last()
        found = sorted(glob.glob(self.path("model_*.pth")), key=os.path.getmtime, reverse=True)
        candidates = ([named] if named in found else []) + [p for p in found if p != named]
        if not candidates:
            return None, None
        for path in candidates:
            try:
                return path, load_checkpoint(path)
            except UnreadableFileError as e:
                logger.warning(f"Cannot resume from {path} ({e}); trying an older checkpoint")
        raise UnreadableFileError(self.folder, "no readable checkpoint to resume from",
                                  "Start without --resume, or remove the damaged files")

    def remove_stale_temporaries(self):
        """Delete temporaries a killed write left behind (never a complete checkpoint)."""
        for tmp in glob.glob(self.path("*.tmp-*")):
            logger.info(f"Removing {tmp}, left by an interrupted checkpoint write")
            os.remove(tmp)


def load_checkpoint(path):
    """A checkpoint of ours (torch.load weights_only); an UnreadableFileError names a bad file."""
    return read_weights(path).obj


def initial_state_dict(path, block_form="c", trust_pickle=False):
    """Classifier weights from MODEL.WEIGHTS: our checkpoints as they are, others converted."""
    loaded = load_weights(path, keep_fc=True, block_form=block_form, trust_pickle=trust_pickle)
    return {k: torch.as_tensor(v) for k, v in loaded.checkpoint["model"].items()}


def load_initial_weights(model, path, block_form="c", trust_pickle=False):
    """Load MODEL.WEIGHTS into a classifier; a classifier layer of another shape is skipped."""
    state = initial_state_dict(path, block_form, trust_pickle)
    own = model.state_dict()
    for key in [k for k in state if k.startswith("linear.") and k in own
                and own[k].shape != state[k].shape]:
        logger.info(f"{path}: {key} has shape {tuple(state[key].shape)}, the model "
                    f"{tuple(own[key].shape)}: kept the model's initialization")
        state.pop(key)
    incompatible = model.load_state_dict(state, strict=False)
    missing = [k for k in incompatible.missing_keys if not k.startswith("linear.")
               and not k.endswith("num_batches_tracked")]
    if missing or incompatible.unexpected_keys:
        raise WeightsMismatchError(
            f"{path} does not fit the model: missing {missing[:5]}, unexpected "
            f"{incompatible.unexpected_keys[:5]}. Check MODEL.RESNEXT.TEMPLATE against the file.")
    return incompatible
