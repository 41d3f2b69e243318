#!/usr/bin/env python
"""Convert ResNet/ResNeXt ImageNet weights to a resnext_det detectron2 .pkl.

    python tools/convert_weights.py SRC OUT.pkl [--keep-fc] [--block-form c] [--verbose]
    python tools/convert_weights.py --list [X101]   # the catalog of public ImageNet weight files

SRC may be any of (recognized by content, not by file name):
  torchvision / timm state dicts (.pth, .bin, .safetensors), pycls checkpoints (.pyth),
  Caffe2 Detectron pickles (R-50.pkl, X-101-32x8d.pkl), Torch7 ResNeXt (.t7),
  Cadene pretrainedmodels ResNeXt-101 (.pth),
  our own classifier or detectron2 checkpoints.
Contract: every source key is renamed, dropped by a stated rule, or an error that names
it; missing and mis-shaped keys are errors too, unless --allow-partial (then each skipped
key is listed). A file under a published name (--list) must be that file: its hash
prefix, format and template are checked. Pickles are read without running code
(--trust-pickle lifts that, for files you trust). Bad input: one `error:` line, exit 2. The printed metadata says which config the weights need:
MODEL.RESNETS.STRIDE_IN_1X1, INPUT.FORMAT, MODEL.PIXEL_MEAN / PIXEL_STD, the template
(MODEL.RESNEXT.TEMPLATE) and MODEL.RESNEXT.BLOCK_FORM; the same metadata is stored in
OUT.pkl under "resnext_det" and checked against the config by ResNeXtCheckpointer.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import os
import sys

from resnext_det.checkpoint import catalog, convert_weights, save_converted
from resnext_det.errors import UserError
from resnext_det.modeling.blocks import BLOCK_FORMS
from resnext_det.utils.cli import EXIT_USER_ERROR, ExitOnUserError, report


def _bool(text):
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
    return text.lower() == "true"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", nargs="?", help="weights file of any supported format")
    p.add_argument("out", nargs="?", help="output .pkl for detectron2")
    p.add_argument("--list", action="store_true",
                   help="print the catalog of public ImageNet weight files and exit; a word "
                        "after it keeps the rows that contain it (e.g. --list X101)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--keep-fc", action="store_true", help="keep the classifier (linear.*)")
    p.add_argument("--allow-partial", action="store_true",
                   help="skip unmatched/missing/mis-shaped keys (listed) instead of failing")
    p.add_argument("--block-form", choices=tuple(BLOCK_FORMS), default="c",
                   help="block form of the written keys (the paper's Figure 3)")
    p.add_argument("--verbose", action="store_true", help="print every rename")
    p.add_argument("--caffe2-preset", choices=("msra", "fair"),
                   help="Caffe2 pickles: msra = stride in 1x1, std 1; fair = stride in 3x3, "
                        "std [57.375, 57.12, 58.395] (default: decided by the file's layout "
                        "and C, see resnext_det/checkpoint/sources/caffe2.py)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle a file that holds more than weights; runs any code it carries")
    p.add_argument("--stride-in-1x1", type=_bool, help="override the stride placement")
    p.add_argument("--input-format", choices=("RGB", "BGR"), help="override the channel order")
    p.add_argument("--pixel-mean", type=float, nargs=3, help="override MODEL.PIXEL_MEAN")
    p.add_argument("--pixel-std", type=float, nargs=3, help="override MODEL.PIXEL_STD")
    args = p.parse_args(argv)
    if args.list and args.out is not None:
        p.error("--list takes at most one word to filter the rows by")
    if not args.list and (args.src is None or args.out is None):
        p.error("SRC and OUT are required (or --list)")
    return args


def check_out(args):
    """A UserError when OUT may not be written: the files there are not the tool's to
    replace (a usage error of argparse would print the whole usage before its line)."""
    if not os.path.exists(args.out):
        return
    if not os.path.isfile(args.out):  # a folder, /dev/full: the atomic rename replaced it
        raise UserError(f"OUT {args.out!r} exists and is not a file; give the path of a .pkl file")
    if os.path.exists(args.src) and os.path.samefile(args.src, args.out):
        raise UserError(f"OUT {args.out!r} is SRC: the conversion would replace the file it reads")
    if not args.force:
        raise UserError(f"OUT {args.out!r} exists; pass --force to replace it, or choose "
                        "another name")


def _listed(word):
    """The catalog table; with `word`, its header and the rows that contain it."""
    lines = catalog.table().splitlines()
    rows = [line for line in lines[2:] if word is None or word.lower() in line.lower()]
    return "\n".join(lines[:2] + rows) if rows else f"no catalog entry contains {word!r}"


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        print(_listed(args.src))
        return 0
    overrides = {"stride_in_1x1": args.stride_in_1x1, "input_format": args.input_format,
                 "pixel_mean": args.pixel_mean, "pixel_std": args.pixel_std}
    try:
        check_out(args)
        result = convert_weights(args.src, keep_fc=args.keep_fc, allow_partial=args.allow_partial,
                                 block_form=args.block_form, overrides=overrides,
                                 caffe2_preset=args.caffe2_preset, trust_pickle=args.trust_pickle)
    except UserError as e:
        report(e)
        return EXIT_USER_ERROR
    print("\n".join(result.report.lines(verbose=args.verbose)))
    for key, value in result.metadata.to_dict().items():
        print(f"metadata {key}: {value}")
    try:
        save_converted(result, args.out)
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {len(result.state_dict)} tensors to {args.out}")
    return 0


def run(argv=None):
    """main's exit status; Ctrl-C is `interrupted (Ctrl-C)` and 130, not a traceback."""
    return ExitOnUserError(main)(argv)


if __name__ == "__main__":
    sys.exit(run())
