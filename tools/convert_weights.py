#!/usr/bin/env python
"""Convert ResNet/ResNeXt ImageNet weights to a resnext_det detectron2 .pkl.

    python tools/convert_weights.py SRC OUT.pkl [--keep-fc] [--block-form c] [--verbose]

SRC may be any of (recognized by content, not by file name):
  torchvision / timm state dicts (.pth, .bin, .safetensors), pycls checkpoints (.pyth),
  Caffe2 Detectron pickles (R-50.pkl, X-101-32x8d.pkl), Torch7 ResNeXt (.t7),
  our own classifier or detectron2 checkpoints.
Contract: every source key is renamed, dropped by a stated rule, or an error that names
it; missing and mis-shaped keys are errors too, unless --allow-partial (then each skipped
key is listed). The printed metadata says which config the weights need:
MODEL.RESNETS.STRIDE_IN_1X1, INPUT.FORMAT, MODEL.PIXEL_MEAN / PIXEL_STD, the template
(MODEL.RESNEXT.TEMPLATE) and MODEL.RESNEXT.BLOCK_FORM; the same metadata is stored in
OUT.pkl under "resnext_det" and checked against the config by ResNeXtCheckpointer.
"""
import argparse
import sys

from resnext_det.checkpoint import ConversionError, convert_weights, save_converted


def _bool(text):
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
    return text.lower() == "true"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="weights file of any supported format")
    p.add_argument("out", help="output .pkl for detectron2")
    p.add_argument("--keep-fc", action="store_true", help="keep the classifier (linear.*)")
    p.add_argument("--allow-partial", action="store_true",
                   help="skip unmatched/missing/mis-shaped keys (listed) instead of failing")
    p.add_argument("--block-form", choices=("a", "b", "c"), default="c",
                   help="block form of the written keys (the paper's Figure 3)")
    p.add_argument("--verbose", action="store_true", help="print every rename")
    p.add_argument("--caffe2-preset", choices=("msra", "fair"),
                   help="Caffe2 pickles: msra = stride in 1x1, std 1; fair = stride in 3x3, "
                        "std [57.375, 57.12, 58.395] (default: msra if C == 1 else fair)")
    p.add_argument("--stride-in-1x1", type=_bool, help="override the stride placement")
    p.add_argument("--input-format", choices=("RGB", "BGR"), help="override the channel order")
    p.add_argument("--pixel-mean", type=float, nargs=3, help="override MODEL.PIXEL_MEAN")
    p.add_argument("--pixel-std", type=float, nargs=3, help="override MODEL.PIXEL_STD")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = {"stride_in_1x1": args.stride_in_1x1, "input_format": args.input_format,
                 "pixel_mean": args.pixel_mean, "pixel_std": args.pixel_std}
    try:
        result = convert_weights(args.src, keep_fc=args.keep_fc, allow_partial=args.allow_partial,
                                 block_form=args.block_form, overrides=overrides,
                                 caffe2_preset=args.caffe2_preset)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(result.report.lines(verbose=args.verbose)))
    for key, value in result.metadata.to_dict().items():
        print(f"metadata {key}: {value}")
    save_converted(result, args.out)
    print(f"wrote {len(result.state_dict)} tensors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
