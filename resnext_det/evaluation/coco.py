"""COCO AP printed as tables and written as JSON, computed by a C++ COCOeval by default.

detectron2's COCOEvaluator runs pycocotools' COCOeval (its own C++ "fast" COCOeval needs
detectron2's compiled _C, which the PyPI detectron2 lacks). `faster-coco-eval` is a C++
COCOeval that gives pycocotools' 12 numbers and per-category precision (equal within
1e-4: tests/evaluation/test_eval_backends.py) about 10x faster on 100k detections;
TEST.COCO_EVAL_BACKEND chooses. Its box IoUs are computed for all image/category pairs in
one pass (box_iou.py). We add the JSON file a run is judged by.
"""
import contextlib
import gc
import io
import itertools
import json
import os

import orjson
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.checks import DatasetError
from ..utils.io import atomic_write, replaceable, replaced_folder, staged_folder

METRICS_FILE = "coco_metrics.json"
RESULTS_FILE = "coco_instances_results.json"  # detectron2's name for the detections
# what an evaluation writes in its folder: detectron2's two files and the metrics
EVALUATION_FILES = {"instances_predictions.pth", RESULTS_FILE, METRICS_FILE}
BACKENDS = ("faster-coco-eval", "pycocotools")


def cocoeval_class(backend):
    """The COCOeval class of `backend` ("faster-coco-eval" or "pycocotools")."""
    if backend == "faster-coco-eval":
        from .box_iou import BoxIoUCOCOeval

        return BoxIoUCOCOeval
    return COCOeval


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off inside the block (restored after).

    Evaluation builds several 100,000-dict lists (results, their copies, loadRes' index);
    allocations that many trigger full collections over every live object, which made a
    pass ~10x slower than it is without them (copying 100k result dicts: 0.33 vs 0.03 s).
    Evaluation makes no reference cycles that need collecting meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def evaluate_on_coco(coco_gt, results, iou_type, backend="faster-coco-eval", img_ids=None):
    """COCOeval of `results` (COCO result dicts) against `coco_gt` (a pycocotools COCO).

    Returns the evaluated, accumulated and summarized COCOeval (stats, eval["precision"]).
    As detectron2 does, "segm" ignores result boxes, so that areas are mask areas.
    """
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):  # loadRes prints; summarize is logged below
        coco_dt = coco_gt.loadRes(results) if results else no_results(coco_gt)
    coco_eval = cocoeval_class(backend)(coco_gt, coco_dt, iou_type)
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


def no_results(coco_gt):
    """An empty result set on `coco_gt`'s images: what loadRes cannot make (it reads the
    first result). COCOeval scores it 0 where there is ground truth, -1 where there is none."""
    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                       "categories": list(coco_gt.dataset.get("categories", []))}
    coco_dt.createIndex()
    return coco_dt


def number_objects_from_1(coco_gt):
    """Give the annotations of `coco_gt` (a pycocotools COCO) the ids 1..N, in their order,
    unless they are unique and positive already; returns whether it did.

    COCOeval stores for each detection the id of the object it matched, 0 for none: a
    detection of object 0 counted as a false one (a perfect detector scored 25 AP on two
    objects), faster-coco-eval's counted none matched for negative ids (0 AP), and two
    objects of one id were one object twice. The ids mean nothing else to the metrics.
    """
    annotations = coco_gt.dataset.get("annotations", [])
    ids = [a.get("id") for a in annotations]
    if len(set(ids)) == len(ids) and all(isinstance(i, int) and i > 0 for i in ids):
        return False
    for number, annotation in enumerate(annotations, 1):
        annotation["id"] = number
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints
        coco_gt.createIndex()
    return True


def load_id_mapping(dataset_name):
    """Load the COCO json dataset `dataset_name` once if its metadata has no
    thing_dataset_id_to_contiguous_id yet: the load sets it (and thing_classes).

    register_coco_instances leaves both to load_coco_json, which runs when the set is first
    loaded (detectron2's test loader does, before inference). Predictions made without it
    kept their contiguous ids: detectron2's evaluator took class k for the json's category
    of id k (ids 1..K: each class for the one before it, AP about 0), with no per-class AP.
    """
    metadata = MetadataCatalog.get(dataset_name)
    if (metadata.get("json_file", None) and dataset_name in DatasetCatalog.list()
            and metadata.get("thing_dataset_id_to_contiguous_id", None) is None):
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' COCO prints
            DatasetCatalog.get(dataset_name)


def with_own_keypoints(instances):
    """`instances`, or a copy of them with their own pred_keypoints: detectron2's
    instances_to_coco_json moves pred_keypoints by -0.5 px in place (COCO's keypoints are
    pixel indices), so on the CPU the model's outputs changed under whatever read them
    next (a drawing, a second evaluator)."""
    if not instances.has("pred_keypoints"):
        return instances
    copy = Instances(instances.image_size, **instances.get_fields())
    copy.pred_keypoints = instances.pred_keypoints.clone()
    return copy


class BoxDetections:
    """One image's box detections as arrays, turned into detectron2's COCO result dicts
    (instances_to_coco_json's) only when evaluate() needs them.

    Holding ~100,000 small dicts through an inference loop makes Python's garbage collector
    walk them again and again: process() of 5,000 images x 20 boxes took 0.3-0.6 s with
    dicts, ~0.1 s with arrays. Boxes, masks or keypoints of any other kind keep detectron2's
    conversion in process().
    """

    __slots__ = ("image_id", "boxes", "scores", "classes")

    def __init__(self, instances, image_id):
        boxes = instances.pred_boxes.tensor.to("cpu", copy=True)
        boxes[:, 2:] -= boxes[:, :2]  # XYXY_ABS -> XYWH_ABS, BoxMode.convert's ops
        self.image_id, self.boxes = image_id, boxes.numpy()
        self.scores = instances.scores.to("cpu").numpy()
        self.classes = instances.pred_classes.to("cpu").numpy()

    @staticmethod
    def applies(instances):
        return (not instances.has("pred_masks") and not instances.has("pred_keypoints")
                and instances.has("pred_boxes") and type(instances.pred_boxes) is Boxes)

    def to_coco(self):
        """[{"image_id", "category_id" (contiguous), "bbox" (x, y, w, h), "score"}, ...]"""
        return [{"image_id": self.image_id, "category_id": c, "bbox": b, "score": s}
                for b, s, c in zip(self.boxes.tolist(), self.scores.tolist(),
                                   self.classes.tolist())]


class COCOMetricsEvaluator(COCOEvaluator):
    """detectron2's COCOEvaluator on a chosen COCOeval, writing `coco_metrics.json`.

    The file holds {"dataset": name, "bbox": {"AP": .., "AP50": .., ..., "AP-<class>": ..}},
    and "segm" alike for models that predict masks (Mask R-CNN: tasks are read off the
    predictions, as detectron2 does), numbers in percent, next to
    `coco_instances_results.json` (the detections, masks as COCO RLE).
    """

    def __init__(self, dataset_name, output_dir, backend="faster-coco-eval", **kwargs):
        """
        Args:
            dataset_name, output_dir, kwargs: as detectron2's COCOEvaluator.
            backend (str): "faster-coco-eval" (C++) or "pycocotools" (detectron2's own path).
        """
        # detectron2's own path (backend "pycocotools", and keypoints on either) runs
        # pycocotools' COCOeval: detectron2 built with its _C ran its "unofficial" C++
        # COCOeval_opt there (use_fast_impl defaults to True); one without _C logged "Fast
        # COCO eval is not built. Falling back to official COCO eval." at each evaluator.
        kwargs.setdefault("use_fast_impl", False)
        with gc_paused():  # detectron2 loads the ground truth json here
            load_id_mapping(dataset_name)
            super().__init__(dataset_name, output_dir=output_dir, **kwargs)
        self._dataset_name, self._backend = dataset_name, backend
        if number_objects_from_1(self._coco_api):
            self._logger.warning(
                f"{dataset_name}: its annotation ids are not unique positive integers; they "
                "are numbered 1..N for evaluation (COCOeval reads a match to id 0 as no match, "
                "faster-coco-eval one to a negative id too, and one id of two objects as one "
                "object: each lowered the AP). Renumber them in the json.")

    def process(self, inputs, outputs):
        """detectron2's, box detections kept as BoxDetections until evaluate()."""
        for input, output in zip(inputs, outputs):
            instances = output.get("instances")
            if instances is None or "proposals" in output or not BoxDetections.applies(instances):
                own = {} if instances is None else {"instances": with_own_keypoints(instances)}
                super().process([input], [dict(output, **own)])
            else:
                self._predictions.append({"image_id": input["image_id"],
                                          "instances": BoxDetections(instances, input["image_id"])})

    def evaluate(self, img_ids=None):
        """detectron2's; its files (instances_predictions.pth, coco_instances_results.json)
        and coco_metrics.json replace the previous evaluation's together, once all are
        written (detectron2 writes them in place: a kill meanwhile lost both evaluations'
        files; moved in one by one, with the metrics after, a kill left a mix of both). A
        set without ground truth leaves no coco_metrics.json: the earlier one's detections
        are not these."""
        with gc_paused(), self._staged_output():
            for prediction in self._predictions:
                if isinstance(prediction.get("instances"), BoxDetections):
                    prediction["instances"] = prediction["instances"].to_coco()
            results = super().evaluate(img_ids)
            written = comm.is_main_process() and self._output_dir and results
            if written:  # into the staging folder (self._output_dir meanwhile)
                text = json.dumps({"dataset": self._dataset_name, **results}, indent=2)
                atomic_write(os.path.join(self._output_dir, METRICS_FILE),
                             lambda f: f.write(text.encode()))
        if written:
            path = os.path.join(self._output_dir, METRICS_FILE)
            self._logger.info(f"COCO metrics written to {path}")
        return results

    @contextlib.contextmanager
    def _staged_output(self):
        """detectron2's writes and coco_metrics.json go to a staging folder. It replaces an
        output folder of nothing else (Trainer's inference/<dataset>/) whole
        (utils/io.replaced_folder: a kill leaves one evaluation's files). Into a folder that
        holds other files too (an output_dir of the caller's, a training's OUTPUT_DIR, say:
        renamed, its run would write on into a removed folder), or that one rename cannot
        swap (a link, a mount point, the working directory: utils/io.replaceable), they move
        one by one, the metrics last (utils/io.staged_folder), and the other files stay."""
        output_dir = self._output_dir
        if not output_dir or not comm.is_main_process():
            yield
            return
        held = os.listdir(output_dir) if os.path.isdir(output_dir) else []
        staging = (replaced_folder(output_dir)
                   if set(held) <= EVALUATION_FILES and replaceable(output_dir)
                   else staged_folder(output_dir, last=METRICS_FILE))
        with staging as self._output_dir:
            try:
                yield
            finally:
                self._output_dir = output_dir

    def _dataset_ids(self, results):
        """Results with the dataset's category ids (the model predicts contiguous ones)."""
        to_contiguous = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if to_contiguous is None:
            return results
        to_dataset = {v: k for k, v in to_contiguous.items()}
        return [dict(r, category_id=to_dataset[r["category_id"]]) for r in results]

    def _check_classes(self, results):
        """Every predicted class (a contiguous id) is one of the dataset's: a model of more
        classes stopped the evaluation, after the whole inference, on a KeyError
        (faster-coco-eval) or detectron2's AssertionError (pycocotools)."""
        to_contiguous = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if to_contiguous is None:
            return
        num_classes = len(to_contiguous)
        beyond = sorted({r["category_id"] for r in results} - set(range(num_classes)))
        if beyond:
            raise DatasetError(
                f"{self._dataset_name}: the model predicted classes {beyond[:5]}, but the "
                f"dataset has {num_classes} (0..{num_classes - 1}); evaluate the model on a "
                "dataset of its classes, in their order (or train one whose NUM_CLASSES, "
                f"MODEL.ROI_HEADS' or MODEL.RETINANET's, is {num_classes}).")

    def _tasks_from_predictions(self, predictions):
        """detectron2's, less "segm" where the ground truth has objects without a
        `segmentation` (a box-only json): COCOeval stopped on KeyError 'rle' (faster-coco-eval)
        or 'segmentation' (pycocotools) there, after a whole training. A json without
        "annotations" (COCO's test-dev image lists) is not scored: its detections are written."""
        tasks = super()._tasks_from_predictions(predictions)
        objects = self._coco_api.dataset.get("annotations", [])
        without = sum("segmentation" not in a for a in objects)
        if "segm" in tasks and without:
            self._logger.warning(
                f"{self._dataset_name}: {without} of its {len(objects)} objects have no "
                "'segmentation': the masks are not scored (no segm AP), the boxes are. Add "
                "the objects' masks to the json to score them.")
            tasks = [t for t in tasks if t != "segm"]
        return tasks

    def _eval_predictions(self, predictions, img_ids=None):
        """detectron2's, with the COCOeval of `backend` (keypoints and custom max
        detections stay on detectron2's pycocotools path). No detections at all score what
        COCOeval gives an empty result set, on either backend: 0 where there is ground truth
        (detectron2 reported NaN for each number and no per-class AP)."""
        custom_max_dets = self._max_dets_per_image not in (None, [1, 10, 100])
        results = list(itertools.chain(*[p["instances"] for p in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(results)
        self._check_classes(results)
        if results and (self._backend == "pycocotools" or custom_max_dets or "keypoints" in tasks):
            return super()._eval_predictions(predictions, img_ids)
        results = self._dataset_ids(results)
        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_FILE)
            # orjson: the same numbers (shortest round-trip floats, as json's repr) 10x faster
            # than json.dumps (0.03 vs 0.44 s for 100k detections)
            atomic_write(path, lambda f: f.write(orjson.dumps(results)))
        if not self._do_evaluation:
            return None
        self._logger.info(f"Evaluating predictions with {self._backend} ...")
        for task in sorted(tasks):
            # each task gets its own dicts: loadRes adds top-level keys (area, id, bbox or
            # segmentation) and changes nothing inside them, so a shallow copy suffices
            # (copy.deepcopy of 100,000 results took ~1-2 s)
            # no detections: max detections do not matter (every precision is 0 or -1);
            # keypoints on pycocotools, as with detections (faster-coco-eval's keypoint
            # COCOeval reads its own COCO's cat_img_map: an AttributeError on detectron2's)
            backend = "pycocotools" if task == "keypoints" else self._backend
            coco_eval = evaluate_on_coco(self._coco_api, [dict(r) for r in results], task,
                                         backend, img_ids)
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes"))
        return None
