"""detectron2's DefaultTrainer, with COCO metrics as JSON and distributed training on CPUs."""
import logging
import os
import weakref

import torch
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import LVISEvaluator, PascalVOCDetectionEvaluator
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.utils import comm
from fvcore.common.param_scheduler import ParamScheduler
from torch.nn.parallel import DistributedDataParallel

from ..config.checks import fast_inference_mode, fast_training_mode, roi_align_impl
from ..data.checks import BadImageGuard
from ..evaluation import COCOMetricsEvaluator
from ..modeling.inference import optimize_for_inference
from ..modeling.roi_align import use_roi_align
from ..modeling.train_fold import prepare_for_training
from .amp import build_step_trainer
from .checks import (bad_data_policies, check_datasets, check_iterations_left,
                     check_no_earlier_run, check_resumed_training, check_test_classes,
                     check_test_evaluators, check_test_images, check_weights, checked_train_dicts,
                     evaluator_kind, mark_checkpoints, warn_frozen_from_scratch,
                     warn_resume_finds_nothing)
from .precision import with_inference_dtype
from .resume import DropRecordsAfterCheckpoint, ResumedEvalHook
from .weights import build_checkpointer


def inference_model(cfg, model, *, for_export=False, augmented=False):
    """`model` (unwrapped from DDP), or its optimize_for_inference copy (FAST_INFERENCE),
    run in INFERENCE_DTYPE (engine.precision; for_export=True: float32); `augmented`:
    inside detectron2's GeneralizedRCNNWithTTA (TEST.AUG)."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    mode = fast_inference_mode(cfg)
    if mode:
        model = optimize_for_inference(model, channels_last=mode == "fold+nhwc")
    if augmented:
        model = GeneralizedRCNNWithTTA(cfg, model)
    return with_inference_dtype(cfg, model, for_export=for_export)


def share_main_buffers(model):
    """Every process's buffers (the norms' running statistics) set to the main process's,
    before an evaluation during training.

    DDP runs with broadcast_buffers=False (as detectron2's trainer), so with NORM "BN" each
    process averages the statistics of its own batches, and only the main process's go into
    a checkpoint: each process evaluated its share of the test images with its own, and the
    metrics were those of no saved model. Training is unchanged (BN trains on batch
    statistics and only writes the running ones). timm's distribute_bn(reduce=False) does
    the same.
    """
    if comm.get_world_size() > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer.data, src=0)


class HeldAtEnd(ParamScheduler):
    """An fvcore schedule whose value after the last iteration is the last iteration's.

    detectron2's LRMultiplier asks for the value at where = iteration / MAX_ITER after
    every step, so once at 1.0, after the last one; no step trains with it. fvcore's
    StepParamScheduler (WarmupStepWithFixedGammaLR's) indexes its values at
    int((where + 1e-6) x len(values)), one past the end there: every run stopped on an
    IndexError after its last step, before model_final.pth was written (detectron2's
    DefaultTrainer too).
    """

    def __init__(self, schedule, last):
        """`last`: the `where` of the last iteration trained; later ones read its value."""
        self.schedule, self.last = schedule, last

    def __call__(self, where):
        return self.schedule(min(where, self.last))

    @classmethod
    def where_needed(cls, schedule, max_iter):
        """`schedule` held at its end if its value at the end is an IndexError (fvcore's step
        schedules, also inside WarmupParamScheduler), else `schedule` itself."""
        if not isinstance(schedule, ParamScheduler):
            return schedule  # a torch LR scheduler: the hook steps it, asks no value
        try:
            schedule(1.0)
        except IndexError:
            return cls(schedule, (max_iter - 1) / max_iter)
        return schedule


class Trainer(DefaultTrainer):
    """DefaultTrainer with five changes to its behaviour.

    - Several processes on CPUs (gloo) work: detectron2's __init__ wraps the model in
      DistributedDataParallel with device_ids=[local rank], which torch rejects for a CPU
      module, so __init__ below is DefaultTrainer's with device_ids=None on the CPU.
    - Evaluation writes <OUTPUT_DIR>/inference/<dataset>/coco_metrics.json, runs on
      the folded / channels_last copy that MODEL.RESNEXT.FAST_INFERENCE selects, and
      leaves torch's CPU RNG as it found it: each evaluation's DataLoader draws its seed
      from it, which in detectron2 shifts the RPN / ROI sampling of every iteration after
      an evaluation, so TEST.EVAL_PERIOD changed the trained model.
    - Training data is checked before the first iteration (engine.checks.checked_train_dicts:
      class count, boxes per DATALOADER.ON_BAD_BOX, image files), and an image that cannot
      be decoded is named or skipped per DATALOADER.ON_BAD_IMAGE.
    - The model trains with its frozen norms computed inside the convolutions, and
      channels_last, as MODEL.RESNEXT.FAST_TRAINING selects (same function and gradients).
    - SOLVER.AMP.ENABLED on the CPU trains with bfloat16 autocast (engine.amp), where
      detectron2's AMPTrainer needs CUDA.
    And SOLVER.LR_SCHEDULER_NAME WarmupStepWithFixedGammaLR ends its run (HeldAtEnd: in
    detectron2 an IndexError after the last step); its checkpointer converts MODEL.WEIGHTS
    of any supported format on load and warns where the config disagrees with the
    weights' metadata; TEST.AUG.ENABLED adds the test-time augmentation detectron2's
    tools/train_net.py runs (test_with_TTA).
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (CfgNode): a config with add_resnext_config's keys, as setup_cfg returns
                it. DATASETS.TRAIN and DATASETS.TEST must be registered (checked first,
                before the model is built); MODEL.WEIGHTS is loaded by resume_or_load.
        """
        TrainerBase.__init__(self)
        check_datasets(cfg)
        check_test_images(cfg)
        check_test_evaluators(cfg)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # after both loads: a set registered without thing_classes gets them as it loads
        check_test_classes(cfg)
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False,
                                 **({"device_ids": None} if on_cpu else {}))
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(cfg, model, trainer=weakref.proxy(self))
        mark_checkpoints(self.checkpointer, cfg)
        self.start_iter, self.max_iter, self.cfg = 0, cfg.SOLVER.MAX_ITER, cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        """DefaultTrainer.build_model, set up as MODEL.RESNEXT.FAST_TRAINING and ROI_ALIGN say.

        Args:
            cfg (CfgNode): MODEL.RESNEXT.FAST_TRAINING: "" (as detectron2), "fold",
                "fold+nhwc" (train_fold.prepare_for_training) or "auto" (the one measured
                faster on MODEL.DEVICE, logged); MODEL.RESNEXT.ROI_ALIGN: "torchvision" or
                "sparse" (roi_align.use_roi_align).

        Returns:
            nn.Module: the model; its parameter and buffer names are detectron2's.
        """
        mode, roi_align = fast_training_mode(cfg), roi_align_impl(cfg)
        model = prepare_for_training(super().build_model(cfg), mode, cfg.MODEL.DEVICE)
        use_roi_align(model, roi_align)
        return model

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """DefaultTrainer's schedule; WarmupStepWithFixedGammaLR's held at its last value
        after the last iteration (HeldAtEnd.where_needed), where fvcore's stopped the run."""
        scheduler = super().build_lr_scheduler(cfg, optimizer)
        # the schedule LRMultiplier calls (detectron2 keeps no other handle on it)
        scheduler._multiplier = HeldAtEnd.where_needed(scheduler._multiplier, cfg.SOLVER.MAX_ITER)
        return scheduler

    @classmethod
    def build_checkpointer(cls, cfg, model, **checkpointables):
        return build_checkpointer(cfg, model, **checkpointables)

    def resume_or_load(self, resume=True):
        if not resume:
            check_no_earlier_run(self.checkpointer)
        resuming = resume and self.checkpointer.has_checkpoint()
        if resume and not resuming:
            warn_resume_finds_nothing(self.checkpointer, self.cfg.MODEL.WEIGHTS)
        if not resuming:
            check_weights(self.cfg)
            warn_frozen_from_scratch(self.cfg.MODEL.WEIGHTS, self.cfg.MODEL.BACKBONE.FREEZE_AT)
        super().resume_or_load(resume=resume)
        if resuming:
            check_resumed_training(self.cfg, self.checkpointer)
            check_iterations_left(self.checkpointer, self.start_iter, self.max_iter, self.cfg)

    def build_hooks(self):
        """DefaultTrainer's hooks, led by one that cuts a resumed run's metrics.json back to
        its checkpoint (resume.DropRecordsAfterCheckpoint), with an EvalHook that redoes an
        evaluation a kill cut short (resume.ResumedEvalHook)."""
        out = self.cfg.OUTPUT_DIR
        ret = [DropRecordsAfterCheckpoint(out, self.checkpointer),
               *ResumedEvalHook.replacing(super().build_hooks(), out, self.checkpointer)]
        if self.cfg.TEST.AUG.ENABLED:  # as detectron2's tools/train_net.py: after training,
            writer = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
            tta = hooks.EvalHook(0, self._evaluate_with_tta)
            ret.insert(writer[0] if writer else len(ret), tta)  # and in metrics.json
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader (and sampler) over the checked dicts, loaded once."""
        _, on_bad_image = bad_data_policies(cfg)
        dicts = checked_train_dicts(cfg)
        # MapDataset retries a skipped image with another it has not tried: after len(dicts)
        # failures in a row none is left (it raises a bare ValueError), so the guard ends first.
        mapper = BadImageGuard(DatasetMapper(cfg, is_train=True), on_bad_image=on_bad_image,
                               max_in_a_row=min(100, len(dicts)))
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader, TEST.IMS_PER_BATCH images per batch; an image that cannot
        be decoded is an error naming it (BadImageGuard)."""
        mapper = BadImageGuard(DatasetMapper(cfg, is_train=False), evaluating=True)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper,
                                           batch_size=cfg.TEST.IMS_PER_BATCH)

    @classmethod
    def test(cls, cfg, model, evaluators=None, augmented=False):
        """DefaultTrainer.test on the copy that MODEL.RESNEXT.FAST_INFERENCE asks for, with
        the main process's buffers (what a checkpoint of this iteration holds) and torch's
        RNG kept: the training after it samples as without it.

        Args:
            cfg (CfgNode): DATASETS.TEST names the datasets; MODEL.RESNEXT.FAST_INFERENCE
                ("", "fold", "fold+nhwc") the copy evaluated.
            model (nn.Module): the model (DistributedDataParallel is unwrapped); not changed.
            evaluators (list or None): one per test dataset; None: build_evaluator's.
            augmented (bool): inside detectron2's GeneralizedRCNNWithTTA (test_with_TTA).

        Returns:
            dict: {"bbox": {"AP": ..., "AP-<class>": ...}} (percent) for one test dataset;
            {dataset name: that dict} for several.
        """
        share_main_buffers(model)
        with torch.random.fork_rng(devices=[]):
            return super().test(cfg, inference_model(cfg, model, augmented=augmented), evaluators)

    def _evaluate_with_tta(self):
        """The TTA results, also among those DefaultTrainer.train verifies (EXPECTED_RESULTS)."""
        results = self.test_with_TTA(self.cfg, self.model)
        self._last_eval_results = {**getattr(self, "_last_eval_results", {}), **results}
        return results

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """detectron2's test-time augmentation (its tools/train_net.py's; TEST.AUG.MIN_SIZES,
        MAX_SIZE, FLIP) on the FAST_INFERENCE copy: run with TEST.AUG.ENABLED after the
        training and after an --eval-only's plain evaluation.

        Returns:
            dict: test's results, each key with "_TTA" added ("bbox_TTA"); the files are
            in OUTPUT_DIR/inference/<dataset>_TTA/.
        """
        logging.getLogger(__name__).info("Evaluating with test-time augmentation (TEST.AUG): "
                                         f"sizes {tuple(cfg.TEST.AUG.MIN_SIZES)}, max "
                                         f"{cfg.TEST.AUG.MAX_SIZE}, flip {cfg.TEST.AUG.FLIP}")
        evaluators = [cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference",
                                                                  f"{name}_TTA"))
                      for name in cfg.DATASETS.TEST]
        results = cls.test(cfg, model, evaluators, augmented=True)
        return {f"{key}_TTA": value for key, value in results.items()}

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """
        Args:
            cfg (CfgNode): OUTPUT_DIR, TEST.COCO_EVAL_BACKEND and TEST.KEYPOINT_OKS_SIGMAS
                (empty: COCO's 17 person sigmas) are read.
            dataset_name (str): a registered COCO-format dataset.
            output_folder (str or None): default OUTPUT_DIR/inference/<dataset_name>.

        Returns:
            COCOMetricsEvaluator: writes coco_instances_results.json and coco_metrics.json
            into `output_folder`; for a set whose metadata's evaluator_type is "lvis" or
            "pascal_voc", detectron2's LVISEvaluator or PascalVOCDetectionEvaluator.
        """
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        kind = evaluator_kind(dataset_name)
        if kind == "lvis":  # checks.check_test_evaluators: why, and the package it needs
            return LVISEvaluator(dataset_name, output_dir=output_folder)
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        return COCOMetricsEvaluator(dataset_name, output_dir=output_folder,
                                    backend=cfg.TEST.get("COCO_EVAL_BACKEND", "faster-coco-eval"),
                                    kpt_oks_sigmas=tuple(cfg.TEST.get("KEYPOINT_OKS_SIGMAS", ())))
