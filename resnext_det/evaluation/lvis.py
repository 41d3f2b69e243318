"""Whether detectron2's LVISEvaluator can score here: the lvis package, tried on one box.

PyPI's lvis 0.5.3 (its last release) casts with np.float, which numpy 1.24 removed: its
LVISEval stopped on an AttributeError once a whole training was done. lvis-api from its
repository, where that is fixed, reports the same version, so the package is tried, not read.
"""
import contextlib
import importlib.util
import json
import logging
import os
import tempfile

# One image, one class, one box: what LVISEval needs to run to its summary.
_ONE_BOX = {
    "images": [{"id": 1, "width": 10, "height": 10, "neg_category_ids": [],
                "not_exhaustive_category_ids": []}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                     "area": 25.0}],
    "categories": [{"id": 1, "name": "box", "frequency": "f", "image_count": 1}],
}
_DETECTION = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9}
FIXED_LVIS = "pip install git+https://github.com/lvis-dataset/lvis-api.git"


@contextlib.contextmanager
def _lvis_logs_at(level):
    logger = logging.getLogger("lvis")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def lvis_unusable():
    """Why lvis's LVISEval cannot score here (it ends "the lvis package, which ..."), or None."""
    if importlib.util.find_spec("lvis") is None:
        return "is not installed here: pip install lvis"
    from lvis import LVIS, LVISEval, LVISResults

    with tempfile.TemporaryDirectory() as folder, _lvis_logs_at(logging.ERROR):
        path = os.path.join(folder, "one_box.json")
        with open(path, "w") as f:
            json.dump(_ONE_BOX, f)
        try:
            truth = LVIS(path)
            LVISEval(truth, LVISResults(truth, [dict(_DETECTION)]), "bbox").run()
        except Exception as e:  # noqa: BLE001 (any failure is reported, with its text)
            why = str(e).splitlines()[0].rstrip(".") if str(e) else ""
            fix = (f" Install lvis-api from its repository, where it is fixed: {FIXED_LVIS}"
                   if "numpy" in why else "")
            return f"failed on a one-box set here ({type(e).__name__}: {why}).{fix}"
    return None
