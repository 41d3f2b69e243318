"""Predictions on a user's pictures: detectron2's DefaultPredictor, batched, on the fast copy.

`BatchPredictor.from_config` is DefaultPredictor for a list of pictures at once, with
MODEL.WEIGHTS of any supported format, on the copy MODEL.RESNEXT.FAST_INFERENCE selects
(norms folded, channels_last).
`PredictionWriter` draws each picture's detections with detectron2's Visualizer
(`draw_instances`, which also draws the demo's grid: utils/visualize.py) and collects them
as COCO results; `predict` runs the two over tools/predict.py's inputs.
"""
import errno
import json
import logging
import os
import sys
import time

import cv2
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from ..config.errors import ConfigError
from ..data.checks import BadImageError, DatasetError
from ..data.inputs import count_pictures, read_inputs, resizes_to_nothing
from ..evaluation.coco import RESULTS_FILE, with_own_keypoints
from ..utils.io import (LOCK_NAME, atomic_write, claim_folder, mark_written, move_aside,
                        put_back_aside)
from .checks import check_weights, check_weights_to_infer, num_classes_key
from .trainer import inference_model
from .weights import build_checkpointer

logger = logging.getLogger(__name__)
# DATASETS.TEST "()": the class names the weights store label the pictures (our trainings')
PREDICT_FIX = ("Name the dataset the weights were trained on, or pass DATASETS.TEST \"()\" "
               "for the class names the weights store.")
# detectron2's meta-architectures whose outputs hold no "instances"
NO_INSTANCES = {"ProposalNetwork": "proposals", "SemanticSegmentor": "a semantic segmentation"}
IMAGES_FILE = "images.json"  # {"images": [...], "categories": [...]}: what the results' ids mean


def inference_resize(cfg):
    """DefaultPredictor's resize of each picture: INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST."""
    return T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)


class BatchPredictor:
    """detectron2's DefaultPredictor over a list of BGR pictures, in one forward: each
    picture flipped to the model's INPUT.FORMAT, resized by `aug`, detections in its pixels."""

    def __init__(self, model, *, input_format="BGR", aug=None):
        """
        Args:
            model (nn.Module): a detectron2 model; it is put in eval mode.
            input_format (str): the channel order the model takes, "RGB" or "BGR".
            aug (Augmentation or None): DefaultPredictor's test resize; None: pictures as
                they come.
        """
        self.model, self.input_format, self.aug = model.eval(), input_format, aug
        self.classes = None  # the class names the weights store (our trainings'), if any

    @classmethod
    def from_config(cls, cfg):
        """The predictor of a set-up config: MODEL.WEIGHTS (any format ResNeXtCheckpointer
        reads) on the copy MODEL.RESNEXT.FAST_INFERENCE selects, pictures resized to
        INPUT.MIN/MAX_SIZE_TEST and given in INPUT.FORMAT, as DefaultPredictor does."""
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError("MODEL.WEIGHTS", "", "the trained weights to predict with",
                              "e.g. MODEL.WEIGHTS output/demo/model_final.pth (after `make demo`).")
        check_weights(cfg, training=False)
        architecture = cfg.MODEL.META_ARCHITECTURE
        if architecture in NO_INSTANCES:  # predict then stopped with KeyError: 'instances'
            raise ConfigError("MODEL.META_ARCHITECTURE", architecture, "a detector (e.g. "
                              "GeneralizedRCNN, RetinaNet, PanopticFPN)", f"{architecture} "
                              f"outputs {NO_INSTANCES[architecture]}, not the detections that "
                              "predict draws and writes; tools/train_net.py --eval-only scores it.")
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ConfigError("INPUT.FORMAT", cfg.INPUT.FORMAT, "'RGB' or 'BGR'")
        model = build_model(cfg)
        checkpointer = build_checkpointer(cfg, model)
        checkpointer.load(cfg.MODEL.WEIGHTS)
        check_weights_to_infer(cfg, checkpointer, cfg.DATASETS.TEST[:1], "DATASETS.TEST[0]",
                               PREDICT_FIX)
        predictor = cls(inference_model(cfg, model.eval()), input_format=cfg.INPUT.FORMAT,
                        aug=inference_resize(cfg))
        predictor.classes = checkpointer.last_classes
        return predictor

    def model_input(self, image):
        """DefaultPredictor.__call__'s model input of one BGR picture; None when the test
        resize would give it a side of 0 pixels (1 x 2000, say: PIL then raises)."""
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        if self.aug is not None:
            transform = self.aug.get_transform(image)
            if resizes_to_nothing(transform, image):
                return None
            image = transform.apply_image(image)
        return {"image": torch.as_tensor(image.astype("float32").transpose(2, 0, 1)),
                "height": height, "width": width}

    @torch.no_grad()
    def forward(self, inputs):
        """The model's outputs for `model_input`s of one size, in one forward."""
        return self.model(inputs)

    def __call__(self, images):
        """
        Args:
            images (list[np.ndarray]): HxWx3 uint8 pictures in BGR order (OpenCV's).
        Returns:
            list[dict]: the model's output per picture ({"instances": Instances}, boxes in
            the picture's pixels).
        """
        inputs = [self.model_input(image) for image in images]
        if None in inputs:
            shape = images[inputs.index(None)].shape
            raise BadImageError(f"A {shape[0]}x{shape[1]} picture is too thin for the test "
                                "resize (a side would resize to 0 pixels): crop or pad it.")
        return self.forward(inputs)


def draw_instances(image, instances, metadata, scale=1.0):
    """The BGR picture `image` with `instances` (on the CPU) drawn by detectron2's Visualizer
    (class names from `metadata`), `scale` times its size; BGR, as cv2.imwrite takes it."""
    visualizer = Visualizer(image[:, :, ::-1], metadata, scale=scale)
    return cv2.cvtColor(visualizer.draw_instance_predictions(instances).get_image(),
                        cv2.COLOR_RGB2BGR)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class DatasetIds:
    """The ids of a dataset's json for the results: images listed there keep their id (so
    the results can be scored against the json), other pictures get new ids above them;
    contiguous classes map back to the json's category ids."""

    def __init__(self, metadata):
        json_file, root = metadata.get("json_file", None), metadata.get("image_root", "")
        data = _read_json(json_file) if json_file else None
        id_map = metadata.get("thing_dataset_id_to_contiguous_id", None)
        if json_file and not isinstance(data, dict) and id_map is None:
            raise DatasetError(
                f"DATASETS.TEST[0] {metadata.name!r}: its json {json_file!r} cannot be read as a "
                "COCO json, and its category ids are nowhere else: the results' category_id "
                "would be guessed. Point DETECTRON2_DATASETS (or --dataset) at the json, or "
                "pass DATASETS.TEST \"()\" (category ids: the model's class indices).")
        if json_file and not isinstance(data, dict):
            logger.warning(f"The dataset's json {json_file!r} cannot be read as a COCO json: "
                           "every picture gets a new image_id (categories: the metadata's).")
        data = data if isinstance(data, dict) else {}  # not readable: new ids, logged below
        images = [img for img in data.get("images", [])
                  if isinstance(img, dict) and "file_name" in img and "id" in img]
        self.known = {os.path.realpath(os.path.join(root, str(img["file_name"]))): img["id"]
                      for img in images}
        self.sizes = {img["id"]: (img.get("height"), img.get("width")) for img in images}
        self.resized = []  # pictures listed in the json at another size: new ids
        self.next_id = max(self.known.values(), default=0) + 1
        categories = [c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c]
        # the json's class names in load_coco_json's order (by id), where every category has
        # one: register_coco_instances leaves thing_classes to the set's first load
        named = sorted(categories, key=lambda c: c["id"])
        self.classes = ([c["name"] for c in named] if named and all("name" in c for c in named)
                        and len(named) == len(data["categories"]) else None)
        if id_map is None and categories:
            ids = sorted(c["id"] for c in categories)  # load_coco_json's order
            id_map = {category_id: i for i, category_id in enumerate(ids)}
        self.category_ids = None if id_map is None else {v: k for k, v in id_map.items()}
        if id_map is None:
            logger.warning("The dataset names no json with categories: the results' category_id "
                           "are the model's class indices 0..K-1.")

    def image_id(self, path, frame, size):
        """The json's id of the picture at `path` if it is listed there at this (height,
        width); else a new id (boxes are in the picture's pixels, not the json's)."""
        known = self.known.get(os.path.realpath(path)) if frame is None else None
        if known is not None and self.sizes[known] in ((None, None), tuple(size)):
            return known
        if known is not None:
            self.resized.append(path)
        self.next_id += 1
        return self.next_id - 1

    def category_id(self, contiguous):
        return contiguous if self.category_ids is None else self.category_ids[contiguous]


def coco_results(instances, image_id, category_id):
    """detectron2's instances_to_coco_json of `instances`, its classes mapped by
    `category_id`; `instances` stays as it was (with_own_keypoints: the picture was drawn
    with its keypoints half a pixel up and left)."""
    results = instances_to_coco_json(with_own_keypoints(instances), image_id)
    for result in results:
        result["category_id"] = category_id(result["category_id"])
    return results


MAX_DRAWN_PIXELS = 2**30  # OpenCV's CV_IO_MAX_IMAGE_PIXELS: it reads no larger picture


class PredictionWriter:
    """Draws each picture's detections into output_dir and collects them as COCO results.

    An image file gives `<stem>.png`; a video gives `<stem>.mp4` (OpenCV's mp4v), or one
    `<stem>_frame<N>.png` per frame where OpenCV cannot write mp4v. Names that repeat get
    `_2`, `_3`, ... A picture that --scale would draw larger than MAX_DRAWN_PIXELS is not
    drawn (its "output" is null). `close()` writes coco_instances_results.json and images.json.
    """

    def __init__(self, output_dir, metadata, ids, scale=1.0):
        self.output_dir, self.metadata, self.ids, self.scale = output_dir, metadata, ids, scale
        self.results, self.images, self.names, self.videos = [], [], set(), {}
        self.undrawn = set()  # files too large to draw at this scale

    def _name(self, path, ext):
        stem = os.path.splitext(os.path.basename(path))[0] or "picture"
        name, n = stem + ext, 1
        while name in self.names:
            n += 1
            name = f"{stem}_{n}{ext}"
        self.names.add(name)
        if os.path.isfile(os.path.join(self.output_dir, PREDICT_MARK)):  # claimed (the tool)
            mark_written(self.output_dir, PREDICT_MARK, name)
        return name

    def _video_writer(self, path, size):
        """(writer or None, output name) for a video; opened at its first frame."""
        if path not in self.videos:
            capture = cv2.VideoCapture(path)
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            capture.release()
            name = self._name(path, ".mp4")
            writer = cv2.VideoWriter(os.path.join(self.output_dir, name),
                                     cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if not writer.isOpened():
                logger.warning(f"OpenCV cannot write mp4v video here: the frames of {path!r} are "
                               "written as pictures.")
                self.names.discard(name)
                writer, name = None, os.path.splitext(name)[0]
            self.videos[path] = (writer, name)
        return self.videos[path]

    def _save(self, picture, drawn):
        if picture.frame is None:
            name = self._name(picture.path, ".png")
        else:
            writer, name = self._video_writer(picture.path, (drawn.shape[1], drawn.shape[0]))
            if writer is not None:
                writer.write(drawn)
                return name
            name = self._name(f"{name}_frame{picture.frame:06d}", ".png")
        path = os.path.join(self.output_dir, name)
        if not cv2.imwrite(path, drawn):  # OpenCV says no more (libpng prints the reason)
            raise OSError(errno.EIO, "OpenCV could not write the drawn picture (a full disk?)",
                          path)
        return name

    def _drawable(self, picture):
        """Whether the drawing has 1 to MAX_DRAWN_PIXELS pixels; a warning (once per file)
        if not."""
        # the Visualizer's canvas: each side x scale + 0.01, rounded down (VisImage's figure
        # size; Agg's canvas takes whole pixels): 100 px at --scale 0.9999 draws 100, not 99
        height, width = (int(side * self.scale + 1e-2) for side in picture.image.shape[:2])
        smallest = min(picture.image.shape[:2]) * self.scale
        if smallest >= 1 and height * width <= MAX_DRAWN_PIXELS:
            return True
        if picture.path not in self.undrawn:
            self.undrawn.add(picture.path)
            if smallest >= 1:
                size = f"{height} x {width} pixels, more than OpenCV reads (2^30); a smaller"
            else:
                h, w = (side * self.scale for side in picture.image.shape[:2])
                size = f"{h:.3g} x {w:.3g} pixels, less than one; a larger"
            logger.warning(f"{picture.path!r}: not drawn: at --scale {self.scale:g} it would be "
                           f"{size} --scale draws it. Its detections are in the json.")
        return False

    def add(self, picture, instances):
        """Draw and record the detections (Instances on the CPU) of one Picture. Its
        results join self.results after its entry joins self.images: a Ctrl-C or SIGTERM
        while it is drawn (half a run's time) left results of an image_id that images.json
        did not list."""
        image_id = self.ids.image_id(picture.path, picture.frame, picture.image.shape[:2])
        results = coco_results(instances, image_id, self.ids.category_id)
        name = None
        if self._drawable(picture):
            name = self._save(picture, draw_instances(picture.image, instances, self.metadata,
                                                      self.scale))
        height, width = picture.image.shape[:2]
        entry = {"id": image_id, "file_name": picture.path, "width": width, "height": height,
                 "output": name}
        self.images.append(entry if picture.frame is None else dict(entry, frame=picture.frame))
        self.results.extend(results)  # one call: an interrupt comes before or after it

    def close(self):
        """Finish the videos; write the results and images json files; returns their paths.
        With no picture predicted it writes none ([]): a run that read no input, or was
        stopped before its first picture, leaves no empty results in place of an earlier
        prediction's (tools/predict.py puts that one back)."""
        for writer, _ in self.videos.values():
            if writer is not None:
                writer.release()
        if not self.images:
            return []
        if self.ids.resized:
            logger.warning(f"{len(self.ids.resized)} pictures are listed in the dataset's json at "
                           f"another size (e.g. {self.ids.resized[0]!r}): their results have new "
                           "image ids, since their boxes are in the pixels of the file read.")
        classes = self.metadata.get("thing_classes", None) or []
        categories = [{"id": self.ids.category_id(i), "name": name}
                      for i, name in enumerate(classes)]
        # images.json first: what the results' ids mean is there whenever the results are (a
        # kill between the two writes left results whose image ids nothing explained)
        for name, content in ((IMAGES_FILE, {"images": self.images, "categories": categories}),
                              (RESULTS_FILE, self.results)):
            path = os.path.join(self.output_dir, name)
            atomic_write(path, lambda f, c=content: f.write(json.dumps(c).encode()))
        return [os.path.join(self.output_dir, name) for name in (RESULTS_FILE, IMAGES_FILE)]


def prediction_metadata(cfg):
    """(metadata, DatasetIds) of DATASETS.TEST[0], its class names checked against
    NUM_CLASSES. A set registered and not loaded (register_coco_instances leaves
    thing_classes to load_coco_json) gets its json's: it labelled the pictures with class
    indices, listed no categories in images.json and skipped the check (a KeyError at the
    first detection of a class the json lacks). The registered entry is left to that load."""
    if not cfg.DATASETS.TEST:
        metadata = Metadata(name="no dataset")  # the weights' class names may come (predict)
        return metadata, DatasetIds(metadata)
    name = cfg.DATASETS.TEST[0]
    if name not in DatasetCatalog.list():  # MetadataCatalog.get would make an empty entry
        raise ConfigError("DATASETS.TEST[0]", name, "a registered dataset name (its class "
                          "names and json ids label the results)", "Register it (--dataset "
                          "NAME=JSON:DIR), or pass DATASETS.TEST \"()\" (class names the "
                          "weights store, else indices).")
    metadata = MetadataCatalog.get(name)
    ids = DatasetIds(metadata)  # the json read once: its ids, and its names if needed
    if metadata.get("thing_classes", None) is None and ids.classes:
        metadata = Metadata(**dict(metadata.as_dict(), thing_classes=ids.classes))
    classes, found = metadata.get("thing_classes", None), num_classes_key(cfg)
    if classes is not None and found is not None and len(classes) != found[1]:
        raise DatasetError(
            f"{found[0]}={found[1]} but DATASETS.TEST[0]={name!r}, whose class names the pictures "
            f"show, has {len(classes)} classes {list(classes)[:20]}. Name the dataset the "
            f"weights were trained on (--dataset NAME=JSON:DIR and DATASETS.TEST \"('NAME',)\").")
    return metadata, ids


def check_output_dir_holds_no_input(output_dir, paths):
    """Drawn pictures must not overwrite the pictures they are drawn from."""
    out = os.path.realpath(output_dir)
    inside = [p for p in paths if os.path.dirname(os.path.realpath(p)) == out]
    if inside:
        raise DatasetError(f"--output {output_dir!r} holds {len(inside)} of the input pictures "
                           f"(e.g. {inside[0]!r}): the drawn pictures would overwrite them. "
                           "Choose another --output folder.")


PREDICT_MARK = ".predict_output"  # in every --output predict wrote: the files it wrote there
PREDICT_MARK_TEXT = "tools/predict.py writes here; the pictures and videos it wrote:\n"
PREDICT_FILES = ("config.yaml", "log.txt", RESULTS_FILE, IMAGES_FILE)  # and those the mark lists


def claim_output_dir(output_dir):
    """Make `output_dir` predict's: new, empty, or an earlier prediction's, which moves whole
    to `<output_dir>.before-<time>` (its json would no longer describe the folder's pictures,
    nor be there at all). Returns that name, or None. A folder of other files (a training's
    config.yaml and checkpoints, the user's own pictures) is an error: the drawn pictures,
    json files and config.yaml would replace files of the same names."""
    _claim(output_dir)
    if not set(os.listdir(output_dir)) - {LOCK_NAME, PREDICT_MARK}:
        return None
    kept = move_aside(output_dir)
    _claim(output_dir)
    return kept


def put_back_earlier_prediction(output_dir, kept):
    """A prediction refused before its first result (a config key, the weights) leaves
    `output_dir` as it found it: the earlier prediction claim_output_dir moved to `kept`
    comes back (each refused try moved one more folder aside)."""
    if put_back_aside(output_dir, kept, ("config.yaml", "log.txt", PREDICT_MARK, LOCK_NAME)):
        logging.getLogger("resnext_det").warning(f"This prediction stopped before its first "
                                                 f"result: the earlier one is back in {output_dir}")


def _claim(output_dir):
    others = claim_folder(output_dir, PREDICT_MARK, PREDICT_MARK_TEXT, own=PREDICT_FILES)
    if others:
        raise DatasetError(f"--output {output_dir!r} holds {len(others)} files that predict "
                           f"did not write (e.g. {others[0]!r}), which its pictures, json "
                           "files and config.yaml could replace. Choose an empty or new "
                           "--output folder.")


def _batches(predictor, pictures, batch_size, skipped):
    """Lists of up to `batch_size` (picture, model input) in order, all of one input size:
    detectron2 pads a batch to its largest picture, and the padding changes a smaller
    picture's detections (DefaultPredictor's, one at a time, are the reference). Too thin
    ones go to `skipped`."""
    batch, size = [], None
    for picture in pictures:
        model_input = predictor.model_input(picture.image)
        if model_input is None:
            skipped.append((picture.path, "is too thin: a side would resize to 0 pixels"))
            continue
        input_size = model_input["image"].shape[1:]
        if batch and (input_size != size or len(batch) == batch_size):
            yield batch
            batch = []
        batch, size = batch + [(picture, model_input)], input_size
    if batch:
        yield batch


def predict(cfg, paths, output_dir, *, batch_size=8, scale=1.0):
    """Predict on `paths` (expand_inputs' files) in batches; write pictures and json files.

    Args:
        cfg (CfgNode): a set-up config (BatchPredictor.from_config; prediction_metadata).
        paths (list[str]): image and video files.
        output_dir (str): where pictures, coco_instances_results.json and images.json go.
        batch_size (int): pictures per forward.
        scale (float): the drawn pictures' size relative to the inputs.
    Returns:
        dict: pictures (predicted), detections, skipped [(path, reason)], undrawn (files
        too large to draw at `scale`), seconds (all), model_seconds (forwards only), files
        (the json files).
    """
    check_output_dir_holds_no_input(output_dir, paths)
    os.makedirs(output_dir, exist_ok=True)
    metadata, ids = prediction_metadata(cfg)  # checked before the model is built
    predictor = BatchPredictor.from_config(cfg)
    if not cfg.DATASETS.TEST and predictor.classes:
        metadata = Metadata(name="MODEL.WEIGHTS", thing_classes=predictor.classes)
        logger.info(f"DATASETS.TEST is empty: class names from {cfg.MODEL.WEIGHTS}")
    elif not cfg.DATASETS.TEST:
        logger.warning("DATASETS.TEST is empty and the weights store no class names: pictures "
                       "show class indices, results hold them.")
    writer = PredictionWriter(output_dir, metadata, ids, scale)
    skipped, done, model_seconds = [], 0, 0.0
    start = time.perf_counter()
    try:
        with tqdm(total=count_pictures(paths), unit=" images", desc="predict",
                  file=sys.stderr) as bar:
            for batch in _batches(predictor, read_inputs(paths, skipped), batch_size, skipped):
                t0 = time.perf_counter()
                outputs = predictor.forward([model_input for _, model_input in batch])
                model_seconds += time.perf_counter() - t0
                for (p, _), output in zip(batch, outputs):
                    writer.add(p, output["instances"].to("cpu"))
                done += len(batch)
                bar.update(len(batch))
    finally:  # a crash or Ctrl-C keeps the results of the pictures done so far
        files = writer.close()
    return {"pictures": done, "detections": len(writer.results), "skipped": skipped,
            "undrawn": len(writer.undrawn),
            "seconds": time.perf_counter() - start, "model_seconds": model_seconds, "files": files}
