"""Classification pretraining on detectron2's engine: detection's step loops (SimpleTrainer;
SOLVER.AMP.ENABLED: AMPTrainer on CUDA, bfloat16 autocast on CPUs, engine/amp.py) and hooks
(LRScheduler, PeriodicCheckpointer, EvalHook, PeriodicWriter: detection's metrics.json).
Several processes (`launch` or torchrun) use DDP: NCCL on GPUs, gloo on CPUs.
"""
import logging
import os
import time
import weakref

import torch
from detectron2.data import build_detection_test_loader
from detectron2.data.build import build_batch_data_loader
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset
from detectron2.solver import LRMultiplier
from detectron2.utils import comm
from torch.utils.data import default_collate

from ..config.errors import ConfigError
from ..config.pretraining_checks import check_pretraining_keys
from ..data.checks import check_stored_classes
from ..data.classification import build_dataset, check_same_classes
from ..engine.amp import build_step_trainer
from ..engine.checks import (RESUME_FIX, check_iterations_left, check_no_earlier_run,
                             check_resumed_solver, check_weights, check_weights_to_evaluate,
                             solver_settings, warn_resume_finds_nothing)
from ..engine.resume import (DropRecordsAfterCheckpoint, PlaceSeededDataset,
                             ResumableCheckpointer, ResumableSampler, ResumedEvalHook, restore_rng)
from ..engine.trainer import HeldAtEnd, share_main_buffers
from .checkpoint import build_cls_checkpointer, save_detection_weights, weights_metadata
from .evaluator import TopKEvaluator
from .model import build_cls_model, template_name
from .solver import build_optimizer, build_param_scheduler
from .transforms import build_test_transform, build_train_transform

logger = logging.getLogger(__name__)


def build_model_for(cfg, dataset):
    """build_cls_model with MODEL.NUM_CLASSES (0: the data's class count), on MODEL.DEVICE."""
    if cfg.MODEL.NUM_CLASSES not in (0, len(dataset.classes)):
        raise ConfigError("MODEL.NUM_CLASSES", cfg.MODEL.NUM_CLASSES,
                          f"0 or {len(dataset.classes)}, the number of classes in the data")
    device = "cpu" if cfg.MODEL.DEVICE == "cpu" else f"cuda:{comm.get_local_rank()}"
    return build_cls_model(cfg, len(dataset.classes)).to(device)


def evaluate(cfg, model, dataset):
    """Top-1/top-5 error of `model` on `dataset` over all processes, by detectron2's test loader
    and inference_on_dataset; the global RNG is left as it was (training goes on the same).

    Returns:
        dict: {"top1_err", "top5_err" (percent), "loss", "images"}.
    """
    loader = build_detection_test_loader(
        dataset, mapper=None, batch_size=cfg.TEST.IMS_PER_BATCH // comm.get_world_size(),
        num_workers=cfg.DATA.NUM_WORKERS, collate_fn=default_collate)
    with torch.random.fork_rng(devices=[]):
        return inference_on_dataset(model, loader, TopKEvaluator())


def evaluate_only(cfg, resume=False):
    """`evaluate` the last checkpoint (resume) or MODEL.WEIGHTS on the validation split."""
    check_pretraining_keys(cfg)
    dataset = build_dataset(cfg, False, build_test_transform(cfg))
    model = build_model_for(cfg, dataset)
    checkpointer = build_cls_checkpointer(cfg, model)
    if not (resume and checkpointer.has_checkpoint()):
        check_weights_to_evaluate(cfg)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    check_classifier_fits(checkpointer, dataset.classes)
    return evaluate(cfg, model, dataset)


def check_classifier_fits(checkpointer, classes):
    """The file just loaded is a classifier of the validation folder's `classes`: their names
    (a training checkpoint stores them) and the whole model, linear.* too, from the file."""
    fix = f"Evaluate a classifier of the {len(classes)} classes of the validation folder."
    check_stored_classes(checkpointer.loaded_file, checkpointer.last_classes, classes,
                         "the validation folder", fix)
    checkpointer.check_loaded_whole(fix)


class Throughput(hooks.HookBase):
    """Puts "[metric]images_per_s" of all processes (CommonMetricPrinter prints it beside the
    losses and ETA) and "epoch" (iterations done / iterations per epoch) in the storage."""

    def __init__(self, images_per_iter, epoch_iters):
        self.images_per_iter, self.epoch_iters = images_per_iter, epoch_iters

    def before_step(self):
        self._start = time.perf_counter()

    def after_step(self):
        storage, seconds = self.trainer.storage, time.perf_counter() - self._start
        storage.put_scalar("[metric]images_per_s", self.images_per_iter / max(seconds, 1e-9))
        storage.put_scalar("epoch", (self.trainer.iter + 1) / self.epoch_iters,
                           smoothing_hint=False)


class ClsTrainer(DefaultTrainer):
    """DefaultTrainer for classification: data, model, schedule (in epochs) and hooks from a
    classification config; resumes exactly; writes model_final.pkl.

    Args:
        cfg (CfgNode): a set-up config of `get_cls_cfg()`.
    Attributes:
        net: the classifier (not wrapped in DDP); epoch_iters: iterations per epoch (float).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        self.cfg, s = cfg, cfg.SOLVER
        check_pretraining_keys(cfg)  # the batches split over the processes, periods, workers
        schedule = build_param_scheduler(s)  # checks SOLVER
        self.train_set = build_dataset(cfg, True, build_train_transform(cfg))
        self.val_set = build_dataset(cfg, False, build_test_transform(cfg))
        check_same_classes(self.train_set, self.val_set)
        self.net = build_model_for(cfg, self.train_set)
        if s.IMS_PER_BATCH > len(self.train_set):
            raise ConfigError("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH,
                              f"at most the {len(self.train_set)} training images")
        self.epoch_iters = len(self.train_set) / s.IMS_PER_BATCH
        self.start_iter, self.max_iter = 0, self._max_iter()
        optimizer = build_optimizer(cfg, self.net)
        cpu = {"device_ids": None} if cfg.MODEL.DEVICE == "cpu" else {}  # gloo: no device ids
        model = create_ddp_model(self.net, broadcast_buffers=False, **cpu)
        self._trainer = build_step_trainer(cfg, model, self._build_train_loader(), optimizer)
        # iteration i trains with schedule(i / (MAX_EPOCHS x epoch_iters)), in epochs of data
        # (i / the rounded iteration count put a step at epoch 2 of 4.5 iterations per epoch
        # at iteration 10, not 9), all epochs even with MAX_ITER; the value asked after the
        # last step, up to half an iteration past the end, where fvcore's MultiStep raises,
        # is the last iteration's (HeldAtEnd)
        length = s.MAX_EPOCHS * self.epoch_iters
        self.scheduler = LRMultiplier(optimizer, HeldAtEnd(schedule, (self.max_iter - 1) / length),
                                      length)
        self.checkpointer = build_cls_checkpointer(cfg, self.net, trainer=weakref.proxy(self))
        self.checkpointer.trained_solver = solver_settings(cfg)
        self.register_hooks(self.build_hooks())

    def epochs_to_iters(self, epochs):
        return max(1, round(epochs * self.epoch_iters))

    def _max_iter(self):
        """The iterations of SOLVER.MAX_EPOCHS, or SOLVER.MAX_ITER: fewer, never more (the lr
        schedule ends with the epochs; a larger MAX_ITER stopped there without a word)."""
        s, total = self.cfg.SOLVER, self.epochs_to_iters(self.cfg.SOLVER.MAX_EPOCHS)
        if s.MAX_ITER > total:
            raise ConfigError("SOLVER.MAX_ITER", s.MAX_ITER, f"0 or at most {total}, the "
                              f"iterations of SOLVER.MAX_EPOCHS={s.MAX_EPOCHS} "
                              f"({len(self.train_set)} images / {s.IMS_PER_BATCH} per batch)",
                              "MAX_ITER stops a run before the end of its lr schedule; raise "
                              "SOLVER.MAX_EPOCHS to train longer.")
        return s.MAX_ITER or total

    def _build_train_loader(self):
        """detectron2's batched loader over a ResumableSampler; each image's augmentations
        are seeded by its place in the stream (PlaceSeededDataset), so that a resumed run
        draws the same ones with any DATA.NUM_WORKERS."""
        c, workers = self.cfg, self.cfg.DATA.NUM_WORKERS
        self.batch = c.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        seed = c.SEED if c.SEED >= 0 else comm.shared_random_seed()
        self.sampler = ResumableSampler(len(self.train_set), seed)
        return build_batch_data_loader(
            PlaceSeededDataset(self.train_set, self.sampler), self.sampler,
            c.SOLVER.IMS_PER_BATCH, num_workers=workers, collate_fn=default_collate,
            seed=seed * 1000 + comm.get_rank(), persistent_workers=workers > 0,
            pin_memory=c.MODEL.DEVICE != "cpu")

    def build_hooks(self):
        c, s = self.cfg, self.cfg.SOLVER
        checkpoints = s.CHECKPOINT_PERIOD or self.epochs_to_iters(1)
        ret = [DropRecordsAfterCheckpoint(c.OUTPUT_DIR, self.checkpointer), hooks.IterationTimer(),
               Throughput(s.IMS_PER_BATCH, self.epoch_iters), hooks.LRScheduler(),
               ResumableCheckpointer(self.checkpointer, checkpoints,
                                     max_to_keep=s.MAX_TO_KEEP or None),
               ResumedEvalHook(c.TEST.EVAL_PERIOD and self.epochs_to_iters(c.TEST.EVAL_PERIOD),
                               self.evaluate, c.OUTPUT_DIR, self.checkpointer)]
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=c.LOG_PERIOD))
        return ret

    def evaluate(self):
        share_main_buffers(self.net)  # what a checkpoint of this iteration holds
        self._last_eval_results = evaluate(self.cfg, self.net, self.val_set)
        return {"val": self._last_eval_results}  # val/top1_err, ... in metrics.json

    def metadata(self, iteration):
        return weights_metadata(self.cfg, template_name(self.cfg), len(self.train_set.classes),
                                iteration)

    def checkpoint_extra(self, iteration):
        extra = {"classes": list(self.train_set.classes), "config": self.cfg.dump(),
                 "data_seed": self.sampler.seed}  # the order's seed, drawn when SEED < 0
        if self.cfg.MODEL.ARCH == "imagenet":  # a detector's MODEL.WEIGHTS may name the file
            meta = self.metadata(iteration + 1).to_dict()
            extra.update(matching_heuristics=True, resnext_det=meta)
        return extra

    def resume_or_load(self, resume=True):
        """Resume from the newest readable checkpoint (iteration, optimizer, schedule, RNG
        states, place in the data), or start from MODEL.WEIGHTS of any format."""
        resuming = resume and self.checkpointer.has_checkpoint()
        if not resume:  # model_final.pkl too: all a detector needs, often the one file kept
            check_no_earlier_run(self.checkpointer, outputs=("model_final.pkl",))
        if resume and not resuming:
            warn_resume_finds_nothing(self.checkpointer, self.cfg.MODEL.WEIGHTS)
        if not resuming:
            check_weights(self.cfg)
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resuming:
            check_stored_classes(self.checkpointer.loaded_file, self.checkpointer.last_classes,
                                 self.train_set.classes, "the data", RESUME_FIX)
            check_resumed_solver(self.cfg, self.checkpointer)
            self.start_iter = self.iter + 1
            check_iterations_left(self.checkpointer, self.start_iter, self.max_iter, self.cfg,
                                  ("SOLVER.MAX_ITER", "SOLVER.MAX_EPOCHS"))
            restore_rng(extra)
            self.sampler.seed = extra.get("data_seed", self.sampler.seed)
        self.sampler.start = self.start_iter * self.batch

    def train(self):
        """Train to max_iter, then write model_final.pkl (ImageNet-style models).

        Returns:
            dict: the last evaluation, as `evaluate`.
        """
        logger.info(f"Training {template_name(self.cfg)} on {len(self.train_set)} images of "
                    f"{len(self.train_set.classes)} classes, {self.epoch_iters:.1f} iterations "
                    f"per epoch, to iteration {self.max_iter}")
        TrainerBase.train(self, self.start_iter, self.max_iter)
        if self.cfg.MODEL.ARCH == "imagenet" and comm.is_main_process():
            save_detection_weights(os.path.join(self.cfg.OUTPUT_DIR, "model_final.pkl"), self.net,
                                   self.metadata(self.max_iter))
        comm.synchronize()
        return getattr(self, "_last_eval_results", None)
