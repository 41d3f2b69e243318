"""The body of tools/pretrain_cls.py: config set-up and the per-process main."""
from ..engine.setup import output_folder, setup_cfg, task_of
from .config import get_cls_cfg
from .trainer import ClsTrainer, evaluate_only


def setup_cls_cfg(args):
    """resnext_det.engine.setup_cfg (merge, checks, CPU fallback, freeze, default_setup) on
    get_cls_cfg() instead of detectron2's detection config."""
    return setup_cfg(args, get_cls_cfg(), task=task_of(args))


def main(args):
    """Per-process entry point: train (or evaluate with --eval-only).

    Returns:
        dict: the last evaluation, {"top1_err", "top5_err" (percent), "loss", "images"}.
    """
    cfg = setup_cls_cfg(args)
    with output_folder(cfg.OUTPUT_DIR) as folder:  # the lock setup_cfg took, released
        if args.eval_only:
            return evaluate_only(cfg, resume=args.resume)
        trainer = ClsTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        folder.starts()
        return trainer.train()
