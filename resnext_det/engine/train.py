"""The body of tools/train_net.py: train, or evaluate with --eval-only."""
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..config.checks import check_evaluated_keypoints, check_training_keys
from .checks import (check_datasets, check_evaluated_num_classes, check_test_evaluators,
                     check_test_images, check_weights_to_evaluate, check_weights_to_infer)
from .setup import output_folder, setup_cfg, task_of
from .trainer import Trainer


def evaluate(cfg, resume=False):
    """Load MODEL.WEIGHTS (or the last checkpoint with resume) and run COCO evaluation."""
    with output_folder(cfg.OUTPUT_DIR):  # a refused start puts the earlier evaluation back
        check_evaluated_keypoints(cfg)
        check_datasets(cfg, fields=("TEST",))
        check_test_images(cfg)  # loads the sets: their thing_classes
        check_evaluated_num_classes(cfg)
        check_test_evaluators(cfg)
        model = Trainer.build_model(cfg)
        checkpointer = Trainer.build_checkpointer(cfg, model)
        if not (resume and checkpointer.has_checkpoint()):
            check_weights_to_evaluate(cfg)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        check_weights_to_infer(cfg, checkpointer, cfg.DATASETS.TEST, "DATASETS.TEST")
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:  # as detectron2's tools/train_net.py
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():  # TEST.EXPECTED_RESULTS: exit status 1 when one is off
            verify_results(cfg, results)
        return results


def train(cfg, resume=False):
    """Train from MODEL.WEIGHTS (or resume from the last checkpoint); returns test results."""
    with output_folder(cfg.OUTPUT_DIR) as folder:  # the lock setup_cfg took, released
        check_training_keys(cfg, comm.get_world_size())
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=resume)
        folder.starts()
        trainer.train()
    # DefaultTrainer.train returns results only when TEST.EXPECTED_RESULTS is set; the
    # final evaluation (its EvalHook) keeps them here in any case.
    return getattr(trainer, "_last_eval_results", None)


def run(cfg, args):
    """Train, or evaluate with --eval-only, a set-up config; returns the evaluation."""
    results = (evaluate if args.eval_only else train)(cfg, resume=args.resume)
    comm.synchronize()
    return results


def main(args):
    """Per-process entry point that detectron2's `launch` calls."""
    return run(setup_cfg(args, task=task_of(args)), args)
