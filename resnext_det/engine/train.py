"""The body of tools/train_net.py: train, or evaluate with --eval-only."""
from detectron2.utils import comm

from .checks import check_datasets, check_weights
from .setup import setup_cfg
from .trainer import Trainer


def evaluate(cfg, resume=False):
    """Load MODEL.WEIGHTS (or the last checkpoint with resume) and run COCO evaluation."""
    check_datasets(cfg)
    model = Trainer.build_model(cfg)
    checkpointer = Trainer.build_checkpointer(cfg, model)
    if not (resume and checkpointer.has_checkpoint()):
        check_weights(cfg)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    return Trainer.test(cfg, model)


def main(args):
    """Per-process entry point that detectron2's `launch` calls."""
    cfg = setup_cfg(args)
    if args.eval_only:
        results = evaluate(cfg, resume=args.resume)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    comm.synchronize()
    return results
