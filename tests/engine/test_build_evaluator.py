"""The trainer's evaluator scores as the config says (pycocotools run directly: the oracle)."""
import math

from resnext_det.engine.trainer import Trainer
from tests.evaluation.test_keypoints import (NUM_KEYPOINTS, evaluated, keypoint_set,
                                             pycocotools_keypoints)
from tests.helpers import make_cfg


def test_keypoint_ap_uses_test_keypoint_oks_sigmas(tmp_path):
    """TEST.KEYPOINT_OKS_SIGMAS (detectron2's key: the OKS sigma of each keypoint) reached no
    evaluation: every keypoint AP was computed with COCO's 17 person sigmas."""
    sigmas = [0.02 + 0.01 * k for k in range(NUM_KEYPOINTS)]
    name, gt_path, results = keypoint_set(tmp_path)
    expected = pycocotools_keypoints(gt_path, results, sigmas)
    assert abs(expected["AP"] - pycocotools_keypoints(gt_path, results)["AP"]) > 1
    cfg = make_cfg("MODEL.KEYPOINT_ON", True, "TEST.KEYPOINT_OKS_SIGMAS", sigmas)
    ours = evaluated(Trainer.build_evaluator(cfg, name, str(tmp_path / "eval")), results)
    assert all(abs(ours["keypoints"][k] - v) < 1e-9
               for k, v in expected.items() if not math.isnan(v))
