"""Train or evaluate a Python config (detectron2's LazyConfig): the lazy path of tools/train_net.py.

The loop of detectron2's tools/lazyconfig_train_net.py (instantiate model, optimizer and
loaders; SimpleTrainer or an AMP trainer; IterationTimer, LRScheduler, PeriodicCheckpointer,
EvalHook, PeriodicWriter; evaluation by `inference_on_dataset` with
`instantiate(cfg.dataloader.evaluator)`), with what the YAML path adds:

- ResNeXtCheckpointer: train.init_checkpoint of any supported format is converted on load,
  ResNeXt keys must fit (train.weights.allow_partial), pickles are read safely
  (train.weights.trust_pickle), checkpoints are written atomically and --resume takes the
  newest readable one; the weights' metadata is compared with the config (warnings that
  name lazy keys, e.g. model.backbone.bottom_up.stride_in_1x1).
- The training data checks (class count, boxes per dataloader.on_bad_box, image files;
  undecodable images per dataloader.on_bad_image) when dataloader.train.dataset is
  detectron2's get_detection_dataset_dicts; any other dataset is used unchecked.
- Evaluation on the folded / channels_last copy that train.fast_inference names; training
  with frozen norms folded as train.fast_training says (MODEL.RESNEXT.FAST_TRAINING), and
  the ROI heads' poolers as train.roi_align says (MODEL.RESNEXT.ROI_ALIGN).
- CPU: train.device 'cuda' falls back to 'cpu' with a log line; processes on CPUs (gloo)
  get DistributedDataParallel without device_ids; train.amp.enabled trains with bfloat16
  autocast there (engine.amp, as SOLVER.AMP.ENABLED does).
Not here: MODEL.RESNEXT.CONFIG_FROM_WEIGHTS (a Python config states its model).
"""
import logging

import torch
from detectron2.config import instantiate
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.engine import default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checkpoint import ResNeXtCheckpointer, cache_dir_for
from ..config.checks import roi_align_impl
from ..config.weights import check_config
from ..data import register_digits_named_in
from ..data.checks import BadImageGuard, DatasetError
from ..errors import UserError
from ..modeling.lazy import rename_keys, renamed
from ..modeling.roi_align import use_roi_align
from ..modeling.train_fold import prepare_for_training
from ..utils.cli import quiet_user_errors
from .amp import build_step_trainer
from .checks import (check_datasets, check_evaluated_num_classes, check_iterations_left,
                     check_no_earlier_run, check_resumed_solver, check_resumed_training,
                     check_test_classes, check_test_images, check_weights,
                     check_weights_to_evaluate, check_weights_to_infer, checked_train_dicts,
                     mark_checkpoints, warn_frozen_from_scratch, warn_resume_finds_nothing)
from .lazy_config import (CHECK_CONSISTENCY, REQUIRED_TO_TRAIN, check_lazy_config,
                          device_fallback, load_lazy_config, require, resnext_nodes, target_of)
from .resume import DropRecordsAfterCheckpoint, ResumedEvalHook
from .setup import output_folder, run_default_setup, task_of
from .trainer import HeldAtEnd, inference_model, share_main_buffers

logger = logging.getLogger("detectron2")  # detectron2's tools log here
_checks_logger = logging.getLogger(__name__)  # our warnings, in log.txt by setup_lazy


class LazySetup:
    """A loaded Python config, checked, with its yacs view.

    Attributes:
        cfg (DictConfig): the config (model, dataloader, optimizer, lr_multiplier, train).
        view (CfgNode), names (dict): `yacs_view(cfg)`, for the YAML path's checks.
        note (str or None): what the CPU fallback changed, to log.
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (DictConfig): as load_lazy_config returns it (changed in place by the CPU
                fallback). Everything checkable before building is checked here.
        """
        self.cfg, self.note = cfg, device_fallback(cfg)
        self.view, self.names = check_lazy_config(cfg)

    def checked(self, check, *args, **kwargs):
        """check(view, ...), its UserError renamed to the lazy keys."""
        try:
            return check(self.view, *args, **kwargs)
        except UserError as e:
            raise renamed(e, self.names) from None


def setup_lazy(args):
    """load -> key=value overrides -> CPU fallback -> checks -> default_setup; a LazySetup.

    Also registers the digits demo sets that the config names (tools/train_net.py has
    registered its --dataset jsons before).
    """
    setup = LazySetup(load_lazy_config(args.config_file, args.opts))
    # logging, config.yaml in train.output_dir, train.seed
    run_default_setup(setup.cfg, args, setup.cfg.train.output_dir, "train.output_dir",
                      task=task_of(args))
    quiet_user_errors()
    setup_logger(setup.cfg.train.output_dir, distributed_rank=comm.get_rank(), name="resnext_det")
    if setup.note:
        logger.warning(setup.note)
    setup.checked(register_digits_named_in)
    return setup


def build_model(setup):
    """instantiate(cfg.model) on train.device, set up as train.fast_training says
    (MODEL.RESNEXT.FAST_TRAINING: frozen norms computed inside their convolutions) and
    train.roi_align (MODEL.RESNEXT.ROI_ALIGN: "torchvision" or "sparse")."""
    roi_align = setup.checked(roi_align_impl)
    model = instantiate(setup.cfg.model)
    logger.info(f"Model:\n{model}")
    model = prepare_for_training(model, setup.view.MODEL.RESNEXT.FAST_TRAINING,
                                 setup.cfg.train.device)
    use_roi_align(model, roi_align)
    return model.to(setup.cfg.train.device)


def build_checkpointer(setup, model, **checkpointables):
    """ResNeXtCheckpointer with train.weights' options; metadata warnings name lazy keys."""
    train = setup.cfg.train
    weights = train.get("weights", {})

    def check_metadata(meta):
        for line in check_config(setup.view, meta, log=False):
            _checks_logger.warning(rename_keys(line, setup.names))

    return ResNeXtCheckpointer(
        model, train.output_dir, cache_dir=cache_dir_for(train.output_dir),
        allow_partial=weights.get("allow_partial", False),
        trust_pickle=weights.get("trust_pickle", False),
        block_form=setup.view.MODEL.RESNEXT.BLOCK_FORM,
        on_metadata=check_metadata if resnext_nodes(setup.cfg.model) else None, **checkpointables)


def _call(node, **replaced):
    """Instantiate the LazyCall `node` with some arguments given as objects."""
    target = target_of(node)
    kwargs = {k: instantiate(v) for k, v in node.items() if k != "_target_" and k not in replaced}
    return target(**kwargs, **replaced)


class _RenamedGuard(BadImageGuard):
    """BadImageGuard whose errors name the lazy keys (it runs in DataLoader workers)."""

    def __init__(self, mapper, on_bad_image, max_in_a_row, names, evaluating=False):
        super().__init__(mapper, on_bad_image=on_bad_image, max_in_a_row=max_in_a_row,
                         evaluating=evaluating)
        self.names = names

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except DatasetError as e:
            raise renamed(e, self.names) from e


def build_train_loader(setup):
    """dataloader.train, its dataset checked as the YAML path checks DATASETS.TRAIN."""
    node = setup.cfg.dataloader.train
    dataset = node.get("dataset")
    checkable = isinstance(dataset, DictConfig) and target_of(dataset) is get_detection_dataset_dicts
    if not checkable:
        logger.warning("dataloader.train.dataset is not detectron2's get_detection_dataset_dicts: "
                       "its boxes and files are not checked before training.")
        return instantiate(node)
    setup.checked(check_datasets, fields=("TRAIN",))
    dicts = setup.checked(checked_train_dicts, dataset.get("check_consistency", True),
                          CHECK_CONSISTENCY)
    mapper = _RenamedGuard(instantiate(node.mapper), setup.view.DATALOADER.ON_BAD_IMAGE,
                           min(100, len(dicts)), setup.names)
    replaced = {"dataset": dicts, "mapper": mapper}
    sampler = node.get("sampler")
    if isinstance(sampler, DictConfig) and TRAIN_DATASET in OmegaConf.to_yaml(sampler):
        # e.g. detectron2's LVIS configs: repeat factors from "${dataloader.train.dataset}",
        # which was a second, unchecked load: after a skipped image, factors of other images
        replaced["sampler"] = _instantiated(sampler, TRAIN_DATASET, dicts)
    return _call(node, **replaced)


TRAIN_DATASET = "${dataloader.train.dataset}"


def _instantiated(node, interpolation, value):
    """detectron2's instantiate(node), each argument written as `interpolation` given as
    `value` (an object, not the config the interpolation names)."""
    if isinstance(node, ListConfig):
        return [_argument(node, i, interpolation, value) for i in range(len(node))]
    kwargs = {key: _argument(node, key, interpolation, value)
              for key in node.keys() if key != "_target_"}
    return target_of(node)(**kwargs) if "_target_" in node else kwargs


def _argument(node, key, interpolation, value):
    if OmegaConf.is_interpolation(node, key) and node._get_node(key)._value() == interpolation:
        return value
    child = node[key]
    if isinstance(child, (DictConfig, ListConfig)) and interpolation in OmegaConf.to_yaml(child):
        return _instantiated(child, interpolation, value)
    return instantiate(child)  # detectron2's, where the interpolation is not


def build_test_loader(setup):
    """dataloader.test, its mapper guarded as the YAML path's: a picture that cannot be
    decoded (or of more than 8 bits) stops the evaluation naming it."""
    node = setup.cfg.dataloader.test
    if "mapper" not in node:
        return instantiate(node)
    return _call(node, mapper=_RenamedGuard(instantiate(node.mapper), "error", 1, setup.names,
                                            evaluating=True))


def do_test(setup, model):
    """Evaluate `model` (its train.fast_inference copy) on dataloader.test.

    Returns:
        dict: inference_on_dataset's results, e.g. {"bbox": {"AP": ...}}; {} when the
        config has no dataloader.evaluator.
    """
    cfg = setup.cfg
    if "evaluator" not in cfg.dataloader:
        return {}
    share_main_buffers(model)  # what a checkpoint of this iteration holds
    fast = inference_model(setup.view, model)  # MODEL.RESNEXT.FAST_INFERENCE = train.fast_inference
    with torch.random.fork_rng(devices=[]):  # as Trainer.test: training samples as without it
        results = inference_on_dataset(fast, build_test_loader(setup),
                                       instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def _ddp(setup, model):
    """create_ddp_model with train.ddp; on CPUs DistributedDataParallel takes no device_ids."""
    cpu = {"device_ids": None} if str(setup.cfg.train.device) == "cpu" else {}
    return create_ddp_model(model, **{**dict(setup.cfg.train.get("ddp", {})), **cpu})


def do_train(setup, resume=False, starts=lambda: None):
    """detectron2's lazy training loop with our checkpointer, checks and writers; `starts`
    is called after the checks, before the first iteration (setup.output_folder).

    Returns:
        dict: the last evaluation's results (the EvalHook runs after the last iteration).
    """
    cfg, train = setup.cfg, setup.cfg.train
    require(cfg, REQUIRED_TO_TRAIN)
    if "evaluator" in cfg.dataloader:
        setup.checked(check_datasets, fields=("TEST",))
        setup.checked(check_test_images)
    if not resume:  # before anything is built; with resume, once it is known there is no checkpoint
        setup.checked(check_weights)
    model = build_model(setup)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = build_train_loader(setup)
    if "evaluator" in cfg.dataloader:  # after both loads: sets get thing_classes as they load
        setup.checked(check_test_classes)  # its keys renamed to the lazy ones
    model = _ddp(setup, model)
    # SimpleTrainer; with train.amp.enabled AMPTrainer on CUDA, bfloat16 autocast on CPUs
    trainer = build_step_trainer(setup.view, model, loader, optimizer)
    checkpointer = build_checkpointer(setup, model, trainer=trainer)
    mark_checkpoints(checkpointer, setup.view,  # errors name the lazy keys
                     check_solver=lambda: setup.checked(check_resumed_solver, checkpointer))
    last = {}

    def evaluate():
        last.update(results=do_test(setup, model))
        return last["results"]

    main = comm.is_main_process()
    trainer.register_hooks([
        DropRecordsAfterCheckpoint(train.output_dir, checkpointer),
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=HeldAtEnd.where_needed(instantiate(cfg.lr_multiplier),
                                                           train.max_iter)),
        hooks.PeriodicCheckpointer(checkpointer, **train.checkpointer) if main else None,
        ResumedEvalHook(train.eval_period, evaluate, train.output_dir, checkpointer),
        hooks.PeriodicWriter(default_writers(train.output_dir, train.max_iter),
                             period=train.log_period) if main else None,
    ])
    resuming = resume and checkpointer.has_checkpoint()
    if not resume:
        check_no_earlier_run(checkpointer, "train.output_dir")
    if resume and not resuming:
        warn_resume_finds_nothing(checkpointer, train.init_checkpoint, "train.init_checkpoint")
        setup.checked(check_weights)
    if not resuming:
        warn_frozen_from_scratch(train.init_checkpoint,
                                 OmegaConf.select(cfg, "model.backbone.bottom_up.freeze_at"),
                                 "model.backbone.bottom_up.freeze_at")
    checkpointer.resume_or_load(train.init_checkpoint, resume=resume)
    if resuming:
        setup.checked(check_resumed_training, checkpointer)
        check_iterations_left(checkpointer, trainer.iter + 1, train.max_iter, cfg,
                              ("train.max_iter",))
    starts()
    # the checkpoint holds the iteration that had just finished
    trainer.train(trainer.iter + 1 if resuming else 0, train.max_iter)
    return last.get("results")


def evaluate(setup, resume=False):
    """Load train.init_checkpoint (or, with resume, the last checkpoint) and evaluate."""
    setup.checked(check_datasets, fields=("TEST",))
    setup.checked(check_test_images)  # loads the sets: their thing_classes
    setup.checked(check_evaluated_num_classes)
    model = _ddp(setup, build_model(setup))
    checkpointer = build_checkpointer(setup, model)
    if not (resume and checkpointer.has_checkpoint()):
        setup.checked(check_weights_to_evaluate)
    checkpointer.resume_or_load(setup.cfg.train.init_checkpoint, resume=resume)
    setup.checked(check_weights_to_infer, checkpointer, setup.view.DATASETS.TEST,
                  "dataloader.test.dataset.names")
    return do_test(setup, model)


def main(args):
    """tools/train_net.py's per-process entry point for a .py --config-file."""
    setup = setup_lazy(args)
    with output_folder(setup.cfg.train.output_dir) as folder:
        results = (evaluate(setup, resume=args.resume) if args.eval_only else
                   do_train(setup, resume=args.resume, starts=folder.starts))
    comm.synchronize()
    return results
