#!/usr/bin/env python
"""Export a trained detector for deployment: TorchScript or ONNX, as detectron2's export_model.

    python tools/export_model.py --config-file configs/demo/faster_rcnn_X50_digits.yaml \\
        --format torchscript --export-method tracing --output output/export \\
        MODEL.WEIGHTS output/demo/model_final.pth
    ... --export-method scripting        # compiled: Python control flow kept
    ... --format onnx                    # traced, opset 17; needs `pip install onnx onnxruntime`
    ... --run-eval                       # COCO AP of the exported file on DATASETS.TEST[0]
    ... MODEL.RESNEXT.FAST_INFERENCE ""  # the model as trained (default: the folded NHWC copy)

Writes into --output: model.ts or model.onnx, config.yaml and log.txt (--output is the
OUTPUT_DIR), and for TorchScript detectron2's dump of the code and graphs. Tracing runs the
model on --sample-image (resized as INPUT.MIN/MAX_SIZE_TEST), or else on the first image
of DATASETS.TEST[0]; the written file is then run on that image and its detections compared
with the model's (one log line). --output must be new, empty or an earlier export's (a
training's folder is refused: its config.yaml would be replaced). Bad input ends with one `error: ...` line and exit status
2; RESNEXT_DET_DEBUG=1 adds the traceback.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import os

import resnext_det  # noqa: F401  (registers the backbones and the C4 ROI head)
from resnext_det.data import register_digits_named_in
from resnext_det.engine import output_folder, setup_cfg
from resnext_det.export import FORMATS, METHODS, check_options
from resnext_det.export.main import claim_output_dir, keep_in_staging
from resnext_det.export.main import run as run_export
from resnext_det.utils.cli import ExitOnUserError, run_tool
from resnext_det.utils.io import replaced_folder


def argument_parser():
    parser = argparse.ArgumentParser(
        description="Export a resnext_det detector to TorchScript or ONNX.")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument("--format", choices=FORMATS, default="torchscript")
    parser.add_argument("--export-method", choices=METHODS, default="tracing")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--sample-image", default=None, metavar="FILE",
                        help="image to trace on (default: the first of DATASETS.TEST[0])")
    parser.add_argument("--run-eval", action="store_true",
                        help="evaluate the exported file on DATASETS.TEST[0]")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="KEY VALUE config overrides")
    return parser


def main(args):
    check_options(args.format, args.export_method)  # before the config and the model
    claim_output_dir(args.output)  # the lock, before default_setup writes config.yaml into it
    args.opts = list(args.opts) + ["OUTPUT_DIR", args.output]
    # the export is written in a staging folder that replaces --output whole when all is
    # written (its config.yaml too): a kill or a failure leaves the earlier export as it was
    with output_folder(args.output), replaced_folder(args.output) as staging:  # then unlocks
        cfg = setup_cfg(args, task="export", config_to=os.path.join(staging, "config.yaml"))
        register_digits_named_in(cfg)
        result = run_export(cfg, args, staging)
        keep_in_staging(args.output, staging)
        return result


def run(argv=None):
    args = argument_parser().parse_args(argv)
    return run_tool(lambda: ExitOnUserError(main)(args))


if __name__ == "__main__":
    run()
