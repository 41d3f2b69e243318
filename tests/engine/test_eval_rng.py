"""An evaluation during training leaves the training as it would be without it.

detectron2's test loader draws its seed from torch's global RNG, which the RPN / ROI
sampling of the training also uses, so in detectron2 every evaluation shifts the
sampling of all later iterations. Trainer.test (and the lazy do_test) keep the RNG:
training with TEST.EVAL_PERIOD 2 gives the weights of training without evaluation.
"""
from argparse import Namespace

import torch

from resnext_det.data import register_digits
from resnext_det.engine import Trainer, setup_cfg
from tests.engine.test_train_net import CONFIG, TINY

NAMES = ("rng_digits_train", "rng_digits_val")


def _trained_weights(tmp_path, eval_period):
    opts = [*TINY, "SOLVER.MAX_ITER", 5, "TEST.EVAL_PERIOD", eval_period, "SOLVER.CHECKPOINT_PERIOD", 100,
            "DATASETS.TRAIN", f"('{NAMES[0]}',)", "DATASETS.TEST", f"('{NAMES[1]}',)",
            "TEST.IMS_PER_BATCH", 1, "OUTPUT_DIR", str(tmp_path / f"eval{eval_period}")]
    cfg = setup_cfg(Namespace(config_file=CONFIG, opts=[str(o) for o in opts], eval_only=False),
                    task="train")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    evaluations = []
    test = trainer.test
    trainer.test = lambda *a, **k: evaluations.append(1) or test(*a, **k)
    trainer.train()
    return trainer.model.state_dict(), len(evaluations)


def test_evaluations_leave_the_training_as_it_was(datasets_root, tmp_path):
    register_digits(datasets_root / "digits", names=NAMES)
    plain, none = _trained_weights(tmp_path, 0)
    evaluated, count = _trained_weights(tmp_path, 2)
    assert none == 1 and count == 3  # at the end (detectron2 evaluates then in any case); after 2 and 4 too
    differing = [k for k in plain if not torch.equal(plain[k], evaluated[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
