#!/usr/bin/env python
"""Print the weights catalog as the Markdown table that README.md carries.

    python tools/weights_table.py                  # the table, to paste into README.md
    python tools/weights_table.py --check README.md

README.md holds the table between the lines `<!-- weights-table:begin -->` and
`<!-- weights-table:end -->`; --check exits 1 when that block differs from the catalog
(resnext_det/checkpoint/catalog.py), 2 when the file has no such block.
"""
import signal

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the imports: exit 130, no traceback

import argparse
import sys

from resnext_det.checkpoint import catalog

BEGIN, END = "<!-- weights-table:begin -->", "<!-- weights-table:end -->"


def readme_block(text):
    """The text between the markers (stripped), or None if the markers are absent."""
    if BEGIN not in text or END not in text.split(BEGIN, 1)[1]:  # both, in this order
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", metavar="README", help="compare the README's block with the catalog")
    args = p.parse_args(argv)
    table = catalog.table(markdown=True)
    if args.check is None:
        try:
            print(table, flush=True)
        except OSError as e:  # stdout to a full disk: exit 2, not a traceback
            print(f"error: cannot write the table ({e.strerror})", file=sys.stderr)
            return 2
        return 0
    try:
        with open(args.check, encoding="utf-8") as f:
            block = readme_block(f.read())
    except (OSError, UnicodeDecodeError) as e:  # missing, a folder, not UTF-8 text
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        print(f"error: {args.check}: cannot be read ({reason}); --check takes the README", file=sys.stderr)
        return 2
    if block is None:
        print(f"error: {args.check}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    if block != table:
        print(f"error: {args.check}: the weights table differs from the catalog; "
              "paste the output of tools/weights_table.py between the markers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
