#!/usr/bin/env python
"""Build the digits demo set (detection COCO json + images, classification folders).

    python tools/build_digits_dataset.py [--output datasets/digits] \
        --num-train 2000 --num-val 300 --image-size 128 --seed 0

Skips the build when the output's manifest already records the same spec (--force
rebuilds). The layout and the source are described in resnext_det/data/digits.py;
a spec field that cannot work exits 2 with a message naming the option.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import sys
import time

from resnext_det.data import DigitsSpec, build_digits_dataset, digits_root, is_current, read_manifest
from resnext_det.errors import UserError
from resnext_det.utils.cli import EXIT_USER_ERROR, report


def parse_args(argv=None):
    defaults = DigitsSpec()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=digits_root(),
                        help="root of the set (default: $DETECTRON2_DATASETS/digits)")
    parser.add_argument("--num-train", type=int, default=defaults.num_train)
    parser.add_argument("--num-val", type=int, default=defaults.num_val)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--digit-sizes", type=int, nargs=2, default=defaults.digit_sizes,
                        metavar=("MIN", "MAX"), help="digit height range in pixels")
    parser.add_argument("--max-digits", type=int, default=defaults.max_digits)
    parser.add_argument("--image-format", choices=("jpg", "png"), default=defaults.image_format)
    parser.add_argument("--cls-image-size", type=int, default=defaults.cls_image_size)
    parser.add_argument("--cls-copies", type=int, default=defaults.cls_copies)
    parser.add_argument("--progress-every", type=int, default=500, help="0: quiet")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        spec = DigitsSpec(
            num_train=args.num_train, num_val=args.num_val, image_size=args.image_size,
            seed=args.seed, digit_sizes=tuple(args.digit_sizes), max_digits=args.max_digits,
            image_format=args.image_format, cls_image_size=args.cls_image_size,
            cls_copies=args.cls_copies)
    except ValueError as error:
        parser.error(str(error))
    if is_current(args.output, spec) and not args.force:
        print(f"{args.output}: up to date ({read_manifest(args.output)['counts']})")
        return
    start = time.perf_counter()
    try:
        manifest = build_digits_dataset(args.output, spec, args.progress_every)
    except UserError as error:
        report(error)
        sys.exit(EXIT_USER_ERROR)
    except OSError as error:  # a read-only or full disk
        report(UserError(f"cannot write the digits set under {args.output!r}: {error}"))
        sys.exit(EXIT_USER_ERROR)
    print(f"built {args.output} in {time.perf_counter() - start:.1f}s: {manifest['counts']}")


if __name__ == "__main__":
    main()
