"""Config set-up in detectron2's canonical order, for the command-line tools."""
import contextlib
import glob
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config.checks import (check_device, check_output_dir, check_resnext_keys, check_seed,
                             inference_dtype, merge_config)
from ..config.defaults import add_resnext_config
from ..utils.cli import quiet_user_errors
from ..utils.io import (aside_name, atomic_write, left_by_ended_writers, put_back_aside,
                        release_folder)
from .checks import lock_output_dir
from .weights import config_from_weights


def device_fallback(cfg):
    """MODEL.DEVICE 'cuda...' on a machine without CUDA -> 'cpu'; returns a note or None."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        return "No CUDA device here: MODEL.DEVICE set to 'cpu'."
    return None


@contextlib.contextmanager
def _training_config_kept(output_dir):
    """An evaluation into a training's folder writes its config.yaml to
    OUTPUT_DIR/inference/config.yaml, beside its results, and leaves the training's in place
    (detectron2's default_setup replaces it). A kill in between leaves it as
    config.yaml.kept-<pid>, which the next run in the folder puts back (_put_back_kept)."""
    path = os.path.join(output_dir, "config.yaml")
    if not (comm.is_main_process() and os.path.isfile(path)):
        yield
        return
    moved = os.path.join(output_dir, "inference", "config.yaml")
    with _config_moved(output_dir, moved):
        yield
    logging.getLogger("detectron2").info(f"The evaluation's config is {moved}; {path} stays "
                                         "the training's")


@contextlib.contextmanager
def _config_moved(output_dir, moved):
    """default_setup's OUTPUT_DIR/config.yaml, written in the block, goes to `moved`; the one
    there before stays, kept meanwhile as config.yaml.kept-<pid> (after a kill: _put_back_kept)."""
    path = os.path.join(output_dir, "config.yaml")
    kept = f"{path}.kept-{os.getpid()}"
    if os.path.isfile(path):
        os.replace(path, kept)
    try:
        yield
        if os.path.isfile(path):
            os.makedirs(os.path.dirname(moved), exist_ok=True)
            os.replace(path, moved)  # default_setup logged "Full config saved to <path>"
    finally:
        if os.path.isfile(kept):
            os.replace(kept, path)


def _put_back_kept(output_dir):
    """The training's config.yaml that a killed evaluation left as config.yaml.kept-<pid>."""
    path = os.path.join(output_dir, "config.yaml")
    for kept in left_by_ended_writers(f"{glob.escape(path)}.kept-*", ".kept-"):
        logging.getLogger(__name__).warning(f"Putting back {path} from {kept}, where an "
                                            "evaluation killed in its set-up had kept it")
        os.replace(kept, path)


# OUTPUT_DIR -> the bytes of its config.yaml before this process's training replaced it
# (default_setup writes its own): what a start that is refused puts back.
_earlier_configs = {}


def _keep_earlier_config(output_dir):
    path = os.path.join(output_dir, "config.yaml")
    if comm.is_main_process() and os.path.isfile(path):
        with open(path, "rb") as f:
            _earlier_configs[output_dir] = f.read()


class _OutputFolder:
    def __init__(self, output_dir):
        self.output_dir = output_dir

    def starts(self):
        """The first iteration is next: from here config.yaml is this run's record."""
        _earlier_configs.pop(self.output_dir, None)


@contextlib.contextmanager
def output_folder(output_dir):
    """A training's, evaluation's or export's run in the folder that setup_cfg set up (and
    that the tool locked). A run that ends before `.starts()` (a training: an earlier run
    without --resume, a value or dataset a check refuses, Ctrl-C; an export: any failure,
    since the earlier export's file stays) puts back the config.yaml that was there:
    default_setup had replaced the earlier run's only record of its config. An evaluation
    that fails before its first result puts back the earlier inference/. The lock is
    released at the end in every case."""
    try:
        yield _OutputFolder(output_dir)
    except BaseException:
        _put_back_earlier(output_dir)
        _put_back_evaluation(output_dir)
        raise
    finally:
        _earlier_configs.pop(output_dir, None)
        _earlier_evaluations.pop(output_dir, None)
        release_folder(output_dir)


def _put_back_earlier(output_dir):
    earlier = _earlier_configs.pop(output_dir, None)
    if earlier is not None:
        atomic_write(os.path.join(output_dir, "config.yaml"), lambda f: f.write(earlier))


_earlier_evaluations = {}  # OUTPUT_DIR -> where its earlier inference/ was moved


def _set_aside_evaluation(output_dir):
    """An evaluation writes OUTPUT_DIR/inference/ anew: the one there (a training's final
    evaluation, an earlier --eval-only's with its config.yaml) moves whole to
    inference.before-<time> (detectron2 replaced its files: an --eval-only of another
    checkpoint into a training's folder lost the training's results)."""
    folder = os.path.join(output_dir, "inference")
    if os.path.isdir(folder) and os.listdir(folder):
        kept = _earlier_evaluations[output_dir] = aside_name(folder)
        os.replace(folder, kept)
        logging.getLogger(__name__).warning(f"{folder} held an earlier evaluation: kept in "
                                            f"{kept}; this one writes {folder} anew")


def _put_back_evaluation(output_dir):
    """An evaluation refused before its first result (a dataset, the weights) leaves only
    its config.yaml in inference/: the earlier evaluation comes back (each refused try
    moved one more folder aside)."""
    folder = os.path.join(output_dir, "inference")
    if put_back_aside(folder, _earlier_evaluations.pop(output_dir, None), ("config.yaml",)):
        logging.getLogger(__name__).warning(f"This evaluation stopped before its first result:"
                                            f" the earlier one is back in {folder}")


TASKS = ("train", "evaluate", "export", "other")  # what a tool does with its output folder


def task_of(args):
    """A training tool's task: "evaluate" with --eval-only, else "train"."""
    return "evaluate" if args.eval_only else "train"


def run_default_setup(cfg, args, output_dir, key="OUTPUT_DIR", *, task, config_to=None):
    """detectron2's default_setup (logging, `output_dir`/config.yaml, the seed) with rules
    for the output folder: a training (task "train") locks it first (lock_output_dir) and
    keeps its config.yaml for output_folder to put back if the start is refused, an
    evaluation ("evaluate") keeps a training's config.yaml there and an earlier evaluation's
    files (_set_aside_evaluation), and both put back a config.yaml a killed evaluation left
    aside; an export ("export", its folder claimed by the tool) keeps its config.yaml as a
    training does, or, given `config_to`, writes it there and leaves the earlier one in place
    (an export's staging folder: its config.yaml moves in with the exported file); "other"
    tools (predict: a folder of its own) do none of this."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    if task == "train":
        lock_output_dir(output_dir, key)
    if task in ("train", "evaluate", "export") and comm.is_main_process():
        _put_back_kept(output_dir)
        if task == "evaluate":
            _set_aside_evaluation(output_dir)
    if task == "train" or (task == "export" and config_to is None):
        _keep_earlier_config(output_dir)
    written = (_training_config_kept(output_dir) if task == "evaluate" else
               _config_moved(output_dir, config_to) if config_to else contextlib.nullcontext())
    try:
        with written:
            default_setup(cfg, args)  # writes config.yaml in place: Ctrl-C there left it empty
    except BaseException:
        _put_back_earlier(output_dir)
        raise


def _unapplied_tta(cfg, task):
    """A note when TEST.AUG.ENABLED reaches a tool that runs the model once per picture
    (predict and export, as detectron2's DefaultPredictor and export do), or None."""
    aug = cfg.get("TEST", {}).get("AUG")
    if task in ("other", "export") and aug and aug.get("ENABLED") is True:
        return ("TEST.AUG.ENABLED: test-time augmentation is run by tools/train_net.py's "
                "evaluation only; this tool runs the model once per picture, as detectron2's "
                "DefaultPredictor does.")
    return None


def setup_cfg(args, cfg=None, *, task, config_to=None):
    """get_cfg -> add_resnext_config -> merge_from_file -> merge_from_list -> freeze -> default_setup.

    Between merge and freeze: every MODEL.RESNEXT key is checked, then the CPU fallback
    and MODEL.RESNEXT.CONFIG_FROM_WEIGHTS, whose changes are logged once default_setup has
    set up logging; OUTPUT_DIR is checked before default_setup writes into it. `cfg`: the
    defaults to merge into instead (classification: get_cls_cfg()); `task`, `config_to`: as
    run_default_setup ("train", "evaluate", "export" or "other").
    """
    cfg = add_resnext_config(get_cfg()) if cfg is None else cfg
    merge_config(cfg, args.config_file, args.opts)
    check_resnext_keys(cfg)
    check_seed(cfg.SEED)
    check_device(cfg)
    notes = [device_fallback(cfg), _unapplied_tta(cfg, task)] + config_from_weights(cfg)
    inference_dtype(cfg)  # again: float16 asks for CUDA, which the fallback may have taken
    cfg.freeze()
    check_output_dir(cfg)
    run_default_setup(cfg, args, cfg.OUTPUT_DIR, task=task, config_to=config_to)  # logging, config.yaml
    quiet_user_errors()
    # our modules log under "resnext_det" (e.g. weights vs config warnings): same files
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resnext_det")
    for note in filter(None, notes):
        logging.getLogger("detectron2").warning(note)
    return cfg
