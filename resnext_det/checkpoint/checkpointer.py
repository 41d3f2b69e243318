"""detectron2's DetectionCheckpointer with one way in for weights and writes that survive kills.

Loading: every file goes through `load_weights` (loading.py): read once, restricted
unpickling, foreign formats converted and cached, unknown layouts rejected. After the
load, the ResNeXt keys (stem.*, res2..res5.*, wherever they sit in the model) must have
come from the file with their shapes and the file's ResNeXt keys must all have found a
place: else a WeightsMismatchError names them (allow_partial: logged instead). Heads,
FPN and RPN keys may differ, as when fine-tuning on other classes (logged by detectron2).

Saving: each checkpoint is written to a temporary file and renamed over its name, then
the `last_checkpoint` pointer the same way, so a kill leaves the previous pair intact.
Resuming: when the newest checkpoint cannot be read, the newest readable one is used,
with a warning naming the bad file.
"""
import contextlib
import glob
import os
import re
from urllib.parse import urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..errors import UserError
from ..utils.io import atomic_write, left_by_ended_writers
from .block_forms import convert_block_form
from .convert import AUTHOR
from .loading import cache_dir_for, load_weights
from .readers import UnreadableFileError, read_weights
from .sources.resnext_det import OFFSET_KEY
from .validate import check_values

LAST = "last_checkpoint"  # fvcore's pointer file
CHECKPOINT_NAME = re.compile(r"model_(\d+|final)\.pth")  # PeriodicCheckpointer's file names
_TRUNK = re.compile(r"(^|\.)(stem|res[2-5])\.")


class WeightsMismatchError(UserError, ValueError):
    """ResNeXt keys of a weights file and a model that do not fit each other."""


def trunk_keys(keys):
    """The keys of ResNeXt layers (stem.*, res2..res5.*), but not num_batches_tracked."""
    return [k for k in keys if _TRUNK.search(k) and not k.endswith("num_batches_tracked")]


_BLOCK = re.compile(r"(stem|res[2-5](?:\.\d+)?)\.")


def _blocks(keys):
    """'res4.6, res4.7, ... (N keys)': the blocks that keys belong to, in network order."""
    def order(name):
        return [int(p) if p.isdigit() else p for p in re.split(r"[.]", name)]
    names = sorted({_BLOCK.search(k)[1] for k in keys}, key=order)
    shown = names if len(names) <= 8 else names[:4] + ["..."] + names[-3:]
    return f"{', '.join(shown)} ({len(keys)} keys, e.g. {sorted(keys)[0]!r})"


def _suffix_pairs(unexpected, file_shapes, model_shapes):
    """(file key, file shape, model shape, model key) for keys that detectron2's suffix
    matching paired but left out for their shapes: they come back as unexpected keys."""
    pairs = []
    for key in unexpected:
        model_key = next((m for m in model_shapes if m == key or m.endswith("." + key)), None)
        if model_key is not None and file_shapes.get(key) != model_shapes[model_key]:
            pairs.append((key, file_shapes.get(key), model_shapes[model_key], model_key))
    return pairs


def _mismatch_lines(incompatible, file_shapes, model_shapes):
    """One line per kind of misfit of ResNeXt keys: mis-shaped, missing, unplaced (by block)."""
    # A deformable block's offset predictor starts at zero, where the block is the plain one;
    # ImageNet weights have none, so a missing one keeps that start (detectron2 logs it).
    missing = [k for k in trunk_keys(incompatible.missing_keys) if not OFFSET_KEY.search(k)]
    unexpected = trunk_keys(incompatible.unexpected_keys)
    shaped = [(k, a, b) for k, a, b in incompatible.incorrect_shapes if trunk_keys([k])]
    for key, a, b, model_key in _suffix_pairs(unexpected, file_shapes, model_shapes):
        shaped.append((key, a, b))
        unexpected.remove(key)
        if model_key in missing:
            missing.remove(model_key)
    shaped.sort(key=lambda item: len(item[1] or ()) < 4)  # convolutions first: they tell most
    lines = [f"{len(shaped)} key(s) of another shape, e.g. {k!r}: file shape {tuple(a)}, "
             f"model shape {tuple(b)}" for k, a, b in shaped[:1]]
    lines += [f"{k!r}: file {tuple(a)}, model {tuple(b)}" for k, a, b in shaped[1:4]]
    if missing:
        lines.append(f"model blocks the file does not have: {_blocks(missing)}")
    if unexpected:
        lines.append(f"file blocks with no place in the model: {_blocks(unexpected)}")
    return lines


def local_copy(url, path_manager):
    """The local path of a detectron2:// or https:// file (`path_manager` downloads it into
    its cache once; a ?query is detectron2's, not the server's): no network is an error
    naming the URL, not a urllib traceback."""
    try:
        return path_manager.get_local_path(urlparse(url)._replace(query="").geturl())
    except OSError as e:  # urllib's URLError, HTTPError, a refused connection, ...
        raise UnreadableFileError(url, f"could not be downloaded ({type(e).__name__}: "
                                  f"{getattr(e, 'reason', e)})", "Download it where there "
                                  "is a network and set MODEL.WEIGHTS to the local file "
                                  "(any format tools/convert_weights.py reads)") from None


class ResNeXtCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer + the one way in for weights, strict ResNeXt keys, atomic saves.

    Attributes:
        last_metadata: the "resnext_det" metadata of the last file loaded, or None.
        last_incompatible: missing / unexpected / mis-shaped keys of the last load.
        last_classes: the class names the last file loaded stores ("classes"), or None.
        loaded_file: the path of the last file loaded (converted or not), or None.
        classes: class names each checkpoint saved here stores (None: none), so that an
            evaluation or a resume can see data of other classes (or order).
        trained_input: {config key: value} of the input the model trains on (format, pixel
            statistics), stored likewise (None: none); last_input: the last file's.
        trained_solver, last_solver: the same for the solver (lr, momentum, batch, ...).
        on_resume: called (no argument) when a resumed checkpoint's model has loaded, before
            the optimizer's state does (torch raises a bare ValueError on parameter groups
            of other sizes): the engine checks the solver there. None: nothing.
    """

    def __init__(self, model, save_dir="", *, cache_dir=None, convert_kwargs=None,
                 allow_partial=False, trust_pickle=False, on_metadata=None, block_form="c",
                 **checkpointables):
        """
        Args:
            model, save_dir, checkpointables: as detectron2's DetectionCheckpointer.
            cache_dir: where foreign files are converted to (default
                <save_dir>/converted_weights).
            convert_kwargs: arguments of `convert_weights` (keep_fc, caffe2_preset, ...).
            allow_partial: log ResNeXt keys that do not fit instead of raising.
            trust_pickle: unpickle weights in full (runs code they carry).
            on_metadata: called with the metadata dict of each loaded file that has one
                (the engine checks the config against it there).
            block_form: the model's block form (MODEL.RESNEXT.BLOCK_FORM): weights of any
                form are written for it (block_forms.convert_block_form) before they load.
        """
        super().__init__(model, save_dir, **checkpointables)
        self.cache_dir = cache_dir or cache_dir_for(save_dir)
        self.convert_kwargs = dict(convert_kwargs or {})
        self.allow_partial, self.trust_pickle, self.on_metadata = allow_partial, trust_pickle, on_metadata
        self.block_form = block_form
        if allow_partial:  # a foreign file's conversion skips what does not fit, too
            self.convert_kwargs.setdefault("allow_partial", True)
        self.last_metadata = self.last_incompatible = self.last_classes = self.last_input = None
        self.classes = self.trained_input = self.trained_solver = self.last_solver = None
        self.loaded_file, self._resuming, self.on_resume = None, False, None

    # ------------------------------------------------------------------ loading
    def load(self, path, *args, **kwargs):
        """DetectionCheckpointer.load; after a failed load the next one works (detectron2
        leaves its URL state set on an error, and asserts on it at the next load)."""
        if path and "://" not in path and not os.path.isfile(path):
            read_weights(path)  # fvcore asserts; this names what is wrong (missing, a folder)
        if path and "://" in path:
            local_copy(path, self.path_manager)  # fvcore's load then finds it in the cache
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._parsed_url_during_load = None

    def _load_file(self, filename):
        self.loaded_file = filename
        loaded = load_weights(filename, cache_dir=self.cache_dir, trust_pickle=self.trust_pickle,
                              **self.convert_kwargs)
        if loaded.converted_to:
            self.logger.info(f"Converted {loaded.source_format} weights {filename} -> "
                             f"{loaded.converted_to}")
        self.last_metadata = loaded.metadata
        if loaded.metadata and self.on_metadata:
            self.on_metadata(loaded.metadata)
        return loaded.checkpoint

    def _load_model(self, checkpoint):
        check_values(checkpoint["model"], self.loaded_file)
        if self.block_form != "c":  # conversions and detectron2's files are form (c)
            state = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
                     for k, v in checkpoint["model"].items()}
            checkpoint["model"] = convert_block_form(state, self.block_form)
        self.last_classes, self.last_input = checkpoint.get("classes"), checkpoint.get("input")
        self.last_solver = checkpoint.get("solver")
        file_shapes = {k: tuple(getattr(v, "shape", ())) for k, v in checkpoint["model"].items()}
        model_shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        if self._resuming:
            self._check_resumed(incompatible)
            if self.on_resume:
                self.on_resume()
        lines = _mismatch_lines(incompatible, file_shapes, model_shapes)
        if lines and not self.allow_partial:
            shown = "\n  ".join(lines)
            raise WeightsMismatchError(
                f"{self.loaded_file}: its ResNeXt weights do not fit the model:\n  {shown}\n"
                "The weights are of another depth / cardinality / width than the config builds "
                "(MODEL.RESNEXT.TEMPLATE or MODEL.RESNETS.*; MODEL.RESNEXT.CONFIG_FROM_WEIGHTS "
                "True takes them from the file). MODEL.RESNEXT.WEIGHTS_ALLOW_PARTIAL True loads "
                "what fits and logs the rest.")
        for line in lines:
            self.logger.warning(f"WEIGHTS_ALLOW_PARTIAL: not loaded: {line}")
        return incompatible

    @staticmethod
    def _unloaded(incompatible, unexpected=True):
        """'key: why' for each model key the load left as it was (and each file key that
        found no place, with `unexpected`), the first 4 and a count."""
        lines = [f"{k!r}: checkpoint {tuple(a)}, model {tuple(b)}"
                 for k, a, b in incompatible.incorrect_shapes]
        shaped = {k for k, _, _ in incompatible.incorrect_shapes}  # detectron2 dropped them
        lines += [f"{k!r}: not in the checkpoint" for k in incompatible.missing_keys
                  if k not in shaped]
        if unexpected:
            lines += [f"{k!r}: not in the model" for k in incompatible.unexpected_keys]
        if not lines:
            return ""
        return "\n  ".join(lines[:4] + ([f"... ({len(lines)} keys)"] if len(lines) > 4 else []))

    def check_loaded_whole(self, fix):
        """After a load for evaluation or prediction: every key of the model came from the
        file with its shape, else a WeightsMismatchError naming them and ending in `fix`
        (detectron2 leaves such layers at their random start, with warnings only: a class
        count or head that differs from the training's gives random outputs)."""
        if self.last_incompatible is None:  # nothing was loaded (no weights given)
            return
        shown = self._unloaded(self.last_incompatible, unexpected=False)
        if shown:
            raise WeightsMismatchError(
                f"{self.loaded_file}: these weights do not fill the model the config builds:"
                f"\n  {shown}\nThose layers would keep their random start. {fix}")

    def _check_resumed(self, incompatible):
        """A checkpoint of this run fits the model whole, or the config changed since it was
        written: an error (detectron2 loads what fits, and SGD then fails on the momentum
        buffers of the old shapes, or goes on with new layers at their random start)."""
        shown = self._unloaded(incompatible)
        if shown:
            raise WeightsMismatchError(
                f"{self.loaded_file}: this run's checkpoint does not fit the model the config "
                f"builds now:\n  {shown}\nThe config changed since the checkpoint was written. "
                "Resume with the config the run was trained with, or train the new one into "
                "another output folder (MODEL.WEIGHTS set to the checkpoint starts it from the "
                "weights that fit).")

    # ------------------------------------------------------------------ saving
    def save(self, name, **kwargs):
        """fvcore's Checkpointer.save, written atomically (temporary file, then rename)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), "__author__": AUTHOR}  # ours: loads as it is
        if self.classes is not None:
            data["classes"] = list(self.classes)
        for key, value in (("input", self.trained_input), ("solver", self.trained_solver)):
            if value is not None:
                data[key] = dict(value)
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write(os.path.join(self.save_dir, LAST), lambda f: f.write(last_filename_basename.encode()))

    # ------------------------------------------------------------------ resuming
    def _resume_candidates(self):
        """The pointer's checkpoint first, then every other .pth here, latest iteration first
        (a kill between a checkpoint and its pointer leaves a later one than the pointer
        names). Not by modification time: `cp -r` without -p gives copy order."""
        found = sorted(self._checkpoint_files(), key=_iteration_of, reverse=True)
        named = self.get_checkpoint_file()  # "" without a pointer
        if named and not os.path.isfile(named) and found:
            self.logger.warning(f"{os.path.join(self.save_dir, LAST)} names {named}, which is not"
                                f" there: resuming from the latest checkpoint here, {found[0]}")
        return ([named] if named and os.path.isfile(named) else []) + [p for p in found if p != named]

    def get_checkpoint_file(self):
        """The path `last_checkpoint` names ("" without the pointer). A damaged pointer (not
        UTF-8, a NUL, a path instead of a file name: fvcore's read raised a bare
        UnicodeDecodeError) is named in a warning and ignored: --resume takes the latest
        checkpoint here instead, as after a kill before the pointer was written."""
        pointer = os.path.join(self.save_dir, LAST)
        try:
            with open(pointer, "rb") as f:
                name = f.read().decode("utf-8").strip()
        except FileNotFoundError:
            return ""
        except UnicodeDecodeError:
            name = "\0"
        if not name or "\0" in name or os.path.basename(name) != name:
            self.logger.warning(f"{pointer} is damaged (it should hold a checkpoint's file "
                                "name): ignored, the latest checkpoint here is resumed from")
            return ""
        return os.path.join(self.save_dir, name)

    def has_checkpoint(self):
        """A `last_checkpoint` pointer, or (after a kill before the pointer) a checkpoint file
        of ours here: model_<iteration>.pth or model_final.pth, not any .pth a user put here."""
        return super().has_checkpoint() or bool(self._checkpoint_files())

    def checkpoint_names(self):
        """The base names of the checkpoints here (model_*.pth, and the pointer), sorted."""
        names = sorted(os.path.basename(p) for p in self._checkpoint_files())
        return names + ([LAST] if os.path.isfile(os.path.join(self.save_dir, LAST)) else [])

    def _checkpoint_files(self):
        """The files detectron2's PeriodicCheckpointer names (model_0004999.pth, model_final.pth)."""
        found = glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth"))
        return [p for p in found if CHECKPOINT_NAME.fullmatch(os.path.basename(p))]

    def remove_stale_temporaries(self):
        """Delete what a killed atomic write left (never a complete checkpoint): the
        `<file>.tmp-<pid>` of processes that no longer run. A live writer's is kept (a
        training run saving while an --eval-only --resume starts on its folder)."""
        for tmp in left_by_ended_writers(os.path.join(self.save_dir, "*.tmp-*")):
            self.logger.info(f"Removing {tmp}, left by an interrupted checkpoint write")
            with contextlib.suppress(FileNotFoundError):  # its writer finished meanwhile
                os.remove(tmp)

    def resume_or_load(self, path, *, resume=True):
        """fvcore's resume_or_load; an unreadable newest checkpoint falls back to an older one."""
        candidates = self._resume_candidates() if resume and self.save_dir else []
        if resume and self.save_dir and not candidates and super().has_checkpoint():
            # the trainer would start after the checkpoint's iteration, from `path`'s weights
            pointer = os.path.join(self.save_dir, LAST)
            raise UnreadableFileError(pointer, f"names {self.get_checkpoint_file()!r} to resume "
                                      "from, which is not there (and no other checkpoint is)",
                                      "Put the checkpoint back, or remove the pointer file to "
                                      "start from MODEL.WEIGHTS")
        if self.save_to_disk and self.save_dir:  # a kill in the first write leaves one too
            self.remove_stale_temporaries()
        if not candidates:
            return self.load(path, checkpointables=[])
        bad = []
        for candidate in candidates:
            self._resuming = True
            try:
                return self.load(candidate)
            except UnreadableFileError as e:
                self.logger.warning(f"Cannot resume from {candidate} ({e}); trying an older checkpoint")
                bad.append(candidate)
            finally:
                self._resuming = False
        # not "start without --resume": a new training refuses a folder with checkpoints
        raise UnreadableFileError(self.save_dir, f"no readable checkpoint to resume from (tried "
                                  f"{', '.join(bad) or 'none'})", "Put back a readable copy of "
                                  f"one, or move them and {LAST} out of the folder to train "
                                  "anew there, or train into another output folder")


def _iteration_of(path):
    """(iteration, mtime) of a checkpoint: model_0004999.pth's from its name, model_final's
    from the file (a --resume with a larger SOLVER.MAX_ITER writes later model_<i>.pth
    beside the first run's final; mmap reads no tensor; weights_only: no code runs). A
    final that cannot be read so sorts first: the load then names why, or falls back."""
    number = CHECKPOINT_NAME.fullmatch(os.path.basename(path)).group(1)
    if number != "final":
        return int(number), os.path.getmtime(path)
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        iteration = int(data["iteration"])
    except Exception:  # damaged, or not ours: resume_or_load's load says which
        iteration = float("inf")
    return iteration, os.path.getmtime(path)
