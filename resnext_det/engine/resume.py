"""Exact resume on detectron2's engine: every RNG a step draws from (torch, CUDA, numpy,
python) saved with each checkpoint, a TrainingSampler that starts where the interrupted
run stopped, and augmentations drawn from a seed of each sample's place in the stream, not
from RNGs of loader workers (which restart with every run). With these, a resumed run
computes what the uninterrupted one would have, with or without workers
(tests/classification/test_train.py checks it bit for bit)."""
import filecmp
import itertools
import json
import logging
import os
import random
import shutil
from collections import defaultdict

import numpy as np
import torch
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import hooks
from detectron2.utils import comm
from detectron2.utils.events import JSONWriter

from ..utils.io import aside_name, atomic_write

logger = logging.getLogger(__name__)


def rng_state():
    """torch / CUDA / numpy / python RNG states, in types torch.load(weights_only=True) reads."""
    kind, keys, *rest = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(checkpoint_extra):
    """This process's RNG states from a resumed checkpoint, if the process count is the same."""
    states = checkpoint_extra.get("rng") or []
    if len(states) != comm.get_world_size():
        logger.warning(f"RNG states of {len(states)} processes in the checkpoint, "
                       f"{comm.get_world_size()} now: augmentations differ from the first run's")
    else:
        set_rng_state(states[comm.get_rank()])


class ResumableSampler(TrainingSampler):
    """TrainingSampler's stream (permutations seeded by `seed`, one after another, this
    process taking every world_size-th index), started `start` indices into it. It yields
    (place, index): place is the index's position in the stream of all processes.

    A run resumed after iteration i sets start = (i + 1) * images per process and batch:
    it sees the rest of the interrupted epoch in the same order, then the same epochs.
    Skipping costs one permutation per epoch skipped (seconds for 90 ImageNet epochs).
    """

    def __init__(self, size, seed, start=0):
        super().__init__(size, shuffle=True, seed=seed)
        self.start = start

    @property
    def seed(self):
        return self._seed

    @seed.setter
    def seed(self, value):  # a resumed run takes the interrupted one's (SEED < 0 draws one)
        self._seed = int(value)

    def __iter__(self):
        mine = itertools.islice(super().__iter__(), self.start, None)
        for k, index in enumerate(mine, self.start):
            yield self._rank + self._world_size * k, index


class PlaceSeededDataset(torch.utils.data.Dataset):
    """dataset[index] for the (place, index) items of ResumableSampler, its transforms
    drawing from torch's RNG seeded by (seed, place): the place-th image of the stream gets
    the same crop and flip in every run, in any loader worker and any process count.
    torchvision's transforms draw from torch's RNG only; the caller's RNG is left as it was.
    """

    def __init__(self, dataset, sampler):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        place, index = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.sampler.seed * 1_000_003 + place) % 2 ** 63)
            return self.dataset[index]


class ResumableCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's PeriodicCheckpointer, registered on every process: when a checkpoint is
    due, all processes gather their RNG states and the main process saves them with it and
    the trainer's `checkpoint_extra(iteration)` (a dict; through the trainer's weak proxy, as
    a bound method held here would keep the trainer, its loader and workers, for the gc).
    """

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.max_iter - 1:
            rng = comm.all_gather(rng_state())
            if comm.is_main_process():
                self.step(it, rng=rng, **self.trainer.checkpoint_extra(it))


class DropRecordsAfterCheckpoint(hooks.HookBase):
    """Before a resumed run trains, cut from OUTPUT_DIR/metrics.json what the interrupted
    run wrote after the checkpoint it resumes from: the trailing records of iterations
    >= the start iteration (the resumed run logs them again; detectron2's JSONWriter
    appends, so the plots showed two curves there) and a last line cut short by a kill
    (no JSON reader got past it), wherever they are (JSONWriter writes an evaluation's
    record after a training record of a later iteration). A finished run that --resume
    extends (from its model_final.pth, to a larger MAX_ITER) keeps its final evaluation, the
    record of the start iteration without "lr" (training records have one). The file is
    rewritten in place, so JSONWriter's handle (opened to append) writes on at its new end.
    A run that starts at iteration 0 over records of a run that left no
    checkpoint (killed before its first) moves them to metrics.json.before-<time> and starts
    the file anew. Main process only."""

    def __init__(self, output_dir, checkpointer):
        self.path, self.checkpointer = os.path.join(output_dir, "metrics.json"), checkpointer

    def before_train(self):
        if self.trainer.start_iter >= self.trainer.max_iter:
            self._finish_ended_run()
        if not (comm.is_main_process() and os.path.isfile(self.path)):
            return
        start = self.trainer.start_iter
        if start == 0:
            self._set_aside()
            return
        extends = extends_finished_run(self.checkpointer, start, self.trainer.max_iter)
        cut = drop_records_after(self.path, start, start if extends else None)
        if cut:
            logger.info(f"Resuming at iteration {start}: removed {cut} records of the "
                        f"interrupted run from {self.path}")

    def _finish_ended_run(self):
        """A resume with nothing left to train: the run was killed after its last iteration's
        checkpoint. It gets the model_final.pth the kill kept it from writing (the state
        PeriodicCheckpointer saved as model_<last>.pth, copied: the resumed run trained
        none), last_checkpoint naming it, and its final evaluation the uninterrupted run's
        iteration: the trainer's loop is empty, and detectron2's `iter += 1` after it
        recorded that evaluation one later."""
        self.trainer.iter = self.trainer.max_iter - 1
        loaded, folder = self.checkpointer.loaded_file or "", self.checkpointer.save_dir
        final = os.path.join(folder, "model_final.pth")
        last = f"model_{self.trainer.max_iter - 1:07d}.pth"
        ours = os.path.abspath(loaded) == os.path.abspath(os.path.join(folder, last))
        if not comm.is_main_process() or not ours:
            return
        # PeriodicCheckpointer writes model_final.pth with model_<last>.pth's bytes; another
        # one is an earlier end's, of the run this one extended to a larger MAX_ITER
        if not (os.path.isfile(final) and filecmp.cmp(loaded, final, shallow=False)):
            with open(loaded, "rb") as source:
                atomic_write(final, lambda f: shutil.copyfileobj(source, f))
            logger.info(f"Resuming after the last iteration: {final} written from {loaded}, "
                        "which the interrupted run saved before it was killed")
        # a kill before the pointer: the next extension resumes from model_final.pth, as a
        # finished run's (extends_finished_run), and keeps its final evaluation's record
        self.checkpointer.tag_last_checkpoint("model_final.pth")

    def _set_aside(self):
        """Copy, then truncate: JSONWriter's append handle then writes from the start (a
        rename would carry its writes to the renamed file)."""
        if os.path.getsize(self.path) == 0:
            return
        kept = shutil.copyfile(self.path, aside_name(self.path))
        with open(self.path, "rb+") as f:
            f.truncate(0)
        logger.warning(f"{self.path} held the records of a run that left no checkpoint; they "
                       f"are kept in {kept}, and this run's records start the file anew.")


class ResumedEvalHook(hooks.EvalHook):
    """detectron2's EvalHook that, before a resumed run trains, puts back what a kill after
    the checkpoint it resumes from lost (detectron2 saves, then evaluates, then writes):

    - the evaluation, run first when the interrupted run was killed during it: an evaluation
      point of the run of which metrics.json holds no record (only hooks after this one
      write a record of that iteration), or the final evaluation of a finished run that
      --resume extends (its record, at the start iteration, without "lr");
    - the records detectron2's JSONWriter was to write at the checkpoint's iteration (the
      training record of a logged one: loss, lr, times): those metrics.json lacks are
      appended.

    Each checkpoint holds, in this hook's state (`writer_state`), those records and the
    recent values the writer's medians are taken over, which the resumed run's storage
    starts with: its records are the uninterrupted run's where its training is.
    """

    def __init__(self, eval_period, eval_function, output_dir, checkpointer):
        super().__init__(eval_period, eval_function)
        self.path, self.checkpointer = os.path.join(output_dir, "metrics.json"), checkpointer
        self._resumed = {}  # the writer_state of the checkpoint resumed from

    def state_dict(self):  # saved in the trainer's state with each checkpoint; {}: not at all
        return writer_state(self.trainer)

    def load_state_dict(self, state):
        self._resumed = state

    def _due(self):
        """(iteration whose evaluation is due, whether it is a finished run's final one)."""
        start, end = self.trainer.start_iter, self.trainer.max_iter
        if extends_finished_run(self.checkpointer, start, end):
            return start, True
        if self._period > 0 and start >= 1 and start % self._period == 0 and start < end:
            return start - 1, False
        return None, False

    def before_train(self):
        iteration, final = self._due()
        missed = iteration is not None and self._missed(iteration, final)
        for name, values in self._resumed.get("histories", {}).items():
            for value, at in values:  # histories only: a latest value is written again
                self.trainer.storage.histories()[name].update(value, at)
        unwritten = self._resumed.get("unwritten_records")
        if comm.is_main_process() and unwritten and os.path.isfile(self.path):
            lost = append_lost_records(self.path, unwritten)  # after the check above
            if lost:
                logger.warning(f"{self.path} lacked the records of iterations {lost}, written "
                               "after the checkpoint this run resumes from (the interrupted run "
                               "was killed before them): put back from the checkpoint")
        if missed:
            logger.warning(f"{self.path} holds no evaluation of iteration {iteration}, where "
                           "this run resumes (the interrupted run ended during it): evaluating now")
            self.trainer.storage.iter = iteration  # recorded as the interrupted run would have
            self._do_eval()
            self.trainer.storage.iter = self.trainer.start_iter

    def _missed(self, iteration, final):
        """Whether metrics.json holds no evaluation of `iteration` (the main process's answer,
        which writes it, on every process)."""
        done = (lambda line: _is_evaluation(_record(line) or {}, iteration)) if final else (
            lambda line: _iteration(line) == iteration)
        missed = comm.is_main_process() and os.path.isfile(self.path) and not any(
            map(done, _lines(self.path)))
        return comm.all_gather(missed)[0]

    @classmethod
    def replacing(cls, hook_list, output_dir, checkpointer):
        """`hook_list` with its EvalHook replaced by this one (detectron2's DefaultTrainer)."""
        return [cls(h._period, h._func, output_dir, checkpointer) if type(h) is hooks.EvalHook
                else h for h in hook_list]


def extends_finished_run(checkpointer, start, end):
    """Whether a resumed run goes on past a finished run's end: from its model_final, to a
    larger MAX_ITER (the finished run's final evaluation is recorded at `start`)."""
    loaded = checkpointer.loaded_file or ""
    if not (1 <= start < end and os.path.basename(loaded).startswith("model_final.")):
        return False
    # a start from weights elsewhere (pretrain_cls.py's model_final.pkl, another training's
    # model_final.pth) starts at 0, from a file outside the run's folder
    return os.path.dirname(os.path.abspath(loaded)) == os.path.abspath(checkpointer.save_dir)


def writer_state(trainer):
    """What detectron2's JSONWriter needs to go on after this iteration as it would have:
    "histories", each scalar's values of the last `window` iterations (its medians take
    those: EventStorage.count_samples), and
    "unwritten_records", the records it writes at the end of this iteration, if it is one
    the PeriodicWriter writes at, as JSONWriter selects them (each scalar's latest value,
    smoothed over the window, grouped by iteration, those after its last write), taken
    before the evaluation that follows the checkpoint adds its own and before
    CommonMetricPrinter (the writer before it) puts this iteration's eta_seconds. {} on a
    process without the writer (detectron2's hooks are in trainer._hooks) or outside train()
    (no EventStorage). Values are python's numbers, which torch.load(weights_only) reads."""
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicWriter)]
    writers = [w for h in periodic for w in h._writers if isinstance(w, JSONWriter)]
    storage, it = getattr(trainer, "storage", None), trainer.iter
    if not writers or storage is None:
        return {}
    window = writers[0]._window_size
    state = {"histories": {name: _values_after(history, it - window)
                           for name, history in storage.histories().items()}}
    if (it + 1) % periodic[0]._period == 0 or it == trainer.max_iter - 1:
        groups = defaultdict(dict)
        for key, (value, i) in storage.latest_with_smoothing_hint(window).items():
            if i > writers[0]._last_write:
                groups[i][key] = _number(value)
        state["unwritten_records"] = [{**values, "iteration": i} for i, values in groups.items()]
    return state


def _values_after(history, iteration):
    """A HistoryBuffer's (value, iteration) of iterations after `iteration`, oldest first
    (read from its end: a run's history holds every iteration's)."""
    recent = itertools.takewhile(lambda pair: pair[1] > iteration, reversed(history.values()))
    return [(_number(value), i) for value, i in reversed(list(recent))]


def _number(value):
    """numpy's and torch's scalars as python's."""
    return value.item() if hasattr(value, "item") else value


def append_lost_records(path, records):
    """Append to `path` (JSON lines, as JSONWriter writes them) each of `records` that no
    line holds (no record of its iteration has all its keys); the iterations appended."""
    lines = [r for r in map(_record, _lines(path)) if r]
    lost = [r for r in records if not any(
        line.get("iteration") == r["iteration"] and r.keys() <= line.keys() for line in lines)]
    if lost:
        with open(path, "ab") as f:
            f.write(b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in lost))
    return [r["iteration"] for r in lost]


def drop_records_after(path, start_iter, evaluations_at=None):
    """Remove from `path` (JSON lines) the records with "iteration" >= `start_iter` and the
    lines cut short (not JSON), except evaluation records (no "lr") of iteration
    `evaluations_at`; the number of lines removed."""
    with open(path, "rb+") as f:
        lines = f.read().splitlines(keepends=True)
        kept = [line for line in lines if not _after(line, start_iter, evaluations_at)]
        if kept != lines or (kept and not kept[-1].endswith(b"\n")):
            f.seek(0)
            f.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in kept))
            f.truncate()
    return len(lines) - len(kept)


def _lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


def _record(line):
    """A metrics.json line as a dict; None for a line cut short or blank (not JSON)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else {}


def _iteration(line):
    """A metrics.json line's "iteration"; None for a line cut short or blank (not JSON)."""
    record = _record(line)
    return None if record is None else record.get("iteration", -1)


def _is_evaluation(record, iteration):
    """A record (dict) of `iteration` with no "lr": an evaluation's alone (a training record
    has the LRScheduler hook's lr)."""
    return record.get("iteration") == iteration and "lr" not in record


def _after(line, start_iter, evaluations_at=None):
    """A line to cut: cut short or blank (not JSON), or a record of an iteration >= start
    (but an evaluation's of `evaluations_at`)."""
    record = _record(line)
    if record is None:
        return True
    return record.get("iteration", -1) >= start_iter and not _is_evaluation(record, evaluations_at)
