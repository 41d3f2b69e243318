"""The body of tools/export_model.py: a set-up config -> model, sample image, file, evaluation."""
import logging
import os
import shutil

import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from ..config.errors import ConfigError
from ..data.checks import DECODE_ERRORS
from ..data.inputs import read_picture, resizes_to_nothing
from ..engine.checks import (check_datasets, check_test_evaluators, check_weights,
                             check_weights_to_infer)
from ..engine.predict import inference_resize
from ..engine.trainer import Trainer, inference_model
from ..engine.weights import build_checkpointer
from ..utils.io import LOCK_NAME, claim_folder, put_back_replaced, replaceable
from ..utils.testing import detection_error
from .export import ExportError, check_options, export_model, require_onnx
from .runtime import ExportedDetector

logger = logging.getLogger(__name__)


EXPORT_MARK = ".export_output"  # in every --output export_model wrote: its files may be replaced


def claim_output_dir(output_dir):
    """Make --output export's: new, empty, or an earlier export's. A folder of other files (a
    training's config.yaml and checkpoints) is an error: config.yaml, log.txt and the
    exported file would replace files of the same names. An earlier export that a kill
    left between replaced_folder's two renames comes back first. A folder one rename
    cannot replace (a symbolic link, a mount point, the working directory) is an error
    too: the export would stop after its work, or write into a folder made in its place."""
    if not replaceable(output_dir):
        raise ConfigError("--output", output_dir, "a folder that the export can replace "
                          "whole (not a symbolic link, a mount point or the working "
                          "directory)", f"Export into a folder inside it, e.g. --output "
                          f"{os.path.join(output_dir, 'export')}.")
    put_back_replaced(output_dir)
    others = claim_folder(output_dir, EXPORT_MARK, "tools/export_model.py writes here\n")
    if others:
        raise ConfigError("--output", output_dir, "a new or empty folder, or one that "
                          "export_model wrote", f"It holds {len(others)} files that export "
                          f"did not write (e.g. {others[0]!r}), which its config.yaml, log.txt "
                          "and exported file could replace.")


def keep_in_staging(output_dir, staging):
    """What replaced_folder's swap must carry from --output into the new export: its log.txt
    (this run still logs into it), mark and lock (held by this process: a POSIX lock stays with
    the file). Hard links: a kill before the swap leaves them where they were."""
    for name in ("log.txt", EXPORT_MARK, LOCK_NAME):
        source, target = os.path.join(output_dir, name), os.path.join(staging, name)
        if os.path.isfile(source) and not os.path.exists(target):
            try:
                os.link(source, target)
            except OSError:  # a file system without hard links: a copy (the lock: the folder's)
                shutil.copyfile(source, target)


def load_model(cfg):
    """The model to export: MODEL.WEIGHTS (any format our checkpointer reads) loaded, eval
    mode, and the copy MODEL.RESNEXT.FAST_INFERENCE selects ("": as trained; "fold",
    "fold+nhwc": norms folded, NHWC weights, which a TorchScript file keeps), in float32
    whatever MODEL.RESNEXT.INFERENCE_DTYPE says (logged when it says otherwise)."""
    if not cfg.MODEL.WEIGHTS:  # detectron2 exported the random initialization (predict refuses)
        raise ConfigError("MODEL.WEIGHTS", "", "the trained detector's weights to export (a "
                          "train_net.py checkpoint, a converted file)")
    check_weights(cfg, training=False)
    model = build_model(cfg)
    checkpointer = build_checkpointer(cfg, model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    check_weights_to_infer(cfg, checkpointer, cfg.DATASETS.TEST[:1], "DATASETS.TEST[0]")
    return inference_model(cfg, model.eval(), for_export=True)


def sample_inputs(cfg, sample_image=None):
    """[{"image", "height", "width"}] for tracing: `sample_image`, else DATASETS.TEST[0]'s
    first image (detectron2's export_model takes the same two), read as predict reads a
    picture and resized as INPUT.{FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST} say."""
    what = f"--sample-image {sample_image!r}"
    if sample_image is None:
        if not cfg.DATASETS.TEST:
            raise ExportError("tracing needs a sample image: pass --sample-image FILE, or a "
                              "config whose DATASETS.TEST names a registered dataset.")
        check_datasets(cfg, fields=("TEST",))
        sample_image = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
        what = f"DATASETS.TEST[0]'s first image {sample_image!r} (or pass --sample-image FILE)"
    try:
        picture = read_picture(sample_image, format=cfg.INPUT.FORMAT)
    except DECODE_ERRORS as e:
        raise ExportError(f"{what}: cannot read it as an image "
                          f"({type(e).__name__}: {e}).") from None
    transform = inference_resize(cfg).get_transform(picture)
    if resizes_to_nothing(transform, picture):
        raise ExportError(f"{what}: its {picture.shape[0]} x "
                          f"{picture.shape[1]} pixels resize (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST) "
                          "to a side of 0 pixels. Pass a picture of more even sides.")
    image = transform.apply_image(picture)
    return [{"image": torch.as_tensor(image.astype("float32").transpose(2, 0, 1)),
             "height": picture.shape[0], "width": picture.shape[1]}]


def evaluate_exported(cfg, path, folder=None):
    """COCO evaluation of an exported file on DATASETS.TEST[0], as Trainer.test evaluates the
    eager model, on its loader (a picture that cannot be decoded, or of more than 8 bits,
    which detectron2's plain mapper turns white, stops it naming the file; the plain loader
    scored such a set silently); writes <folder>/inference/<dataset>/coco_metrics.json
    (`folder`: OUTPUT_DIR unless given)."""
    check_datasets(cfg, fields=("TEST",))
    check_test_evaluators(cfg)
    name = cfg.DATASETS.TEST[0]
    loader = Trainer.build_test_loader(cfg, name)  # batches of TEST.IMS_PER_BATCH, run one by one
    output = os.path.join(folder or cfg.OUTPUT_DIR, "inference", name)
    return inference_on_dataset(ExportedDetector(path), loader,
                                Trainer.build_evaluator(cfg, name, output_folder=output))


def compare_on_sample(model, path, inputs):
    """(detections of the model, of the file, largest relative difference) on `inputs`
    (detection_error: boxes and scores, matched as sets within a class)."""
    with torch.no_grad():
        expected = [model([x])[0]["instances"] for x in inputs]
    got = [r["instances"] for r in ExportedDetector(path)(inputs)]
    error = max(detection_error(g, e) for g, e in zip(got, expected))
    return sum(map(len, expected)), sum(map(len, got)), error


def run(cfg, args, folder=None):
    """Export as args.format / args.export_method into `folder` (args.output unless given:
    tools/export_model.py gives the staging folder that replaces args.output whole); returns
    the file's path in args.output and, with args.run_eval, the evaluation of the file.

    The file is run on the sample image and its detections compared with the model's
    (logged; a warning above 1e-3); scripting needs no sample image, and without one
    (no --sample-image, DATASETS.TEST empty) the comparison is skipped.
    """
    check_options(args.format, args.export_method)
    if args.format == "onnx":
        require_onnx()
    model = load_model(cfg)
    inputs = None
    if args.export_method == "tracing" or args.sample_image or cfg.DATASETS.TEST:
        inputs = sample_inputs(cfg, args.sample_image)
    folder = folder or args.output
    path = export_model(model, None if inputs is None else inputs[0]["image"], folder,
                        fmt=args.format, method=args.export_method,
                        block_form=cfg.MODEL.RESNEXT.BLOCK_FORM)
    size, final = os.path.getsize(path) / 2**20, os.path.join(args.output, os.path.basename(path))
    logger.info(f"Exported ({args.format}, {args.export_method}, MODEL.RESNEXT.FAST_INFERENCE="
                f"{cfg.MODEL.RESNEXT.FAST_INFERENCE!r}): {final} ({size:.1f} MiB)")
    if inputs is not None and (args.format == "torchscript" or _has_onnxruntime()):
        n_model, n_file, error = compare_on_sample(model, path, inputs)
        log = logger.info if n_model == n_file and error <= 1e-3 else logger.warning
        log(f"On the sample image: {n_file} detections from the file, {n_model} from the model; "
            f"largest relative difference {error:.2g} (boxes and scores).")
    results = evaluate_exported(cfg, path, folder) if args.run_eval else None
    return final, results


def _has_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
