"""Checks of the keys an evaluation reads (TEST.*): what detectron2 asserted or raised at
the first evaluation, after the whole training, stops the run at its start."""

from .errors import ConfigError, check_bool, check_whole, is_number, is_positive, is_whole


def check_test_keys(cfg):
    """TEST.KEYPOINT_OKS_SIGMAS, TEST.AUG and (detection's) TEST.EXPECTED_RESULTS."""
    _check_oks_sigmas(cfg)
    _check_test_aug(cfg)
    if "EXPECTED_RESULTS" in cfg.get("TEST", {}) and "MASK_ON" in cfg.MODEL:
        _check_expected_results(cfg)


def _check_oks_sigmas(cfg):
    """TEST.KEYPOINT_OKS_SIGMAS: empty (COCO's 17), or one finite number > 0 per keypoint the
    model predicts (detectron2's evaluator asserts the count at the first evaluation, after
    the training; OKS divides by each sigma)."""
    sigmas = list(cfg.get("TEST", {}).get("KEYPOINT_OKS_SIGMAS", None) or ())
    count = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS if cfg.MODEL.get("KEYPOINT_ON") else None
    if sigmas and not (all(map(is_positive, sigmas)) and count in (None, len(sigmas))):
        per = "" if count is None else f"{count} (MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS) "
        raise ConfigError("TEST.KEYPOINT_OKS_SIGMAS", sigmas,
                          f"{per}finite numbers > 0, one per keypoint, or [] for COCO's")


TTA_MODELS = ("GeneralizedRCNN", "PanopticFPN")  # what detectron2's GeneralizedRCNNWithTTA takes


def _check_test_aug(cfg):
    """TEST.AUG, detectron2's test-time augmentation (tools/train_net.py evaluates with it
    when ENABLED): sizes its DatasetMapperTTA can resize to, and a model its
    GeneralizedRCNNWithTTA takes (it asserts, once the whole training is done)."""
    aug = cfg.get("TEST", {}).get("AUG")
    if not (aug and check_bool("TEST.AUG.ENABLED", aug.ENABLED)):
        return
    sizes = aug.MIN_SIZES
    if not (isinstance(sizes, (list, tuple)) and sizes and all(is_whole(s, 1) for s in sizes)):
        raise ConfigError("TEST.AUG.MIN_SIZES", sizes, "a list of short-side sizes >= 1 (pixels)")
    check_whole("TEST.AUG.MAX_SIZE", aug.MAX_SIZE, 1, " (pixels)")
    check_bool("TEST.AUG.FLIP", aug.FLIP)
    model = cfg.MODEL
    unsupported = (f"MODEL.META_ARCHITECTURE {model.META_ARCHITECTURE!r} (it takes "
                   f"{' and '.join(TTA_MODELS)})" if model.META_ARCHITECTURE not in TTA_MODELS
                   else "MODEL.KEYPOINT_ON (keypoints)" if model.KEYPOINT_ON
                   else "MODEL.LOAD_PROPOSALS (proposals from a file)" if model.LOAD_PROPOSALS
                   else None)
    if unsupported:
        raise ConfigError("TEST.AUG.ENABLED", True, f"False with {unsupported}",
                          "detectron2's test-time augmentation has no such models.")


def _check_expected_results(cfg):
    """TEST.EXPECTED_RESULTS, which detectron2's verify_results compares with the final
    evaluation (exit status 1 when a metric is off): [task, metric, value, tolerance] with
    a task this config evaluates, for one test set (else a KeyError after the training)."""
    expected = list(cfg.get("TEST", {}).get("EXPECTED_RESULTS", None) or ())
    if not expected:
        return
    model = cfg.MODEL
    tasks = ["bbox"] + ["segm"] * bool(model.MASK_ON) + ["keypoints"] * bool(model.KEYPOINT_ON)
    tasks += [f"{task}_TTA" for task in tasks] if cfg.TEST.AUG.ENABLED else []
    for entry in expected:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 4 and entry[0] in tasks
                and isinstance(entry[1], str) and is_number(entry[2]) and is_number(entry[3])
                and entry[3] >= 0):
            raise ConfigError("TEST.EXPECTED_RESULTS", expected, "[[task, metric, value, "
                              f"tolerance >= 0], ...] with a task of {tasks}")
    if len(cfg.DATASETS.TEST) != 1:
        raise ConfigError("TEST.EXPECTED_RESULTS", expected, f"[] with DATASETS.TEST "
                          f"{list(cfg.DATASETS.TEST)}", "detectron2 verifies the results of "
                          "one test set.")


COCO_PERSON_KEYPOINTS = 17  # what pycocotools' default kpt_oks_sigmas are for


def check_evaluated_keypoints(cfg):
    """A keypoint model evaluated with TEST.KEYPOINT_OKS_SIGMAS [] is scored with COCO's 17
    person sigmas: one of another keypoint count stopped at its first evaluation, after the
    training (detectron2's evaluator asserts the count). Only where it is evaluated
    (predict and export read no sigma)."""
    count = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    if (cfg.MODEL.get("KEYPOINT_ON") and not list(cfg.TEST.KEYPOINT_OKS_SIGMAS)
            and count != COCO_PERSON_KEYPOINTS):
        raise ConfigError("TEST.KEYPOINT_OKS_SIGMAS", [], f"{count} (MODEL.ROI_KEYPOINT_HEAD."
                          "NUM_KEYPOINTS) finite numbers > 0, one per keypoint", "[] is COCO's "
                          f"sigmas of its {COCO_PERSON_KEYPOINTS} person keypoints.")
