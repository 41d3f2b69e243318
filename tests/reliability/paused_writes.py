"""Run a tool, `python paused_writes.py TOOL ARGS...`, with every checkpoint write held for
PAUSE_S seconds between its data and its sync: a SIGKILL sent while a `*.pth.tmp-<pid>` file
exists lands inside that write every time (an unpaused tiny model's write takes about a
millisecond, so a kill timed from outside missed it six times in a row on a CI machine).
"""
import os
import runpy
import sys
import time

PAUSE_S = 2.0
_fsync = os.fsync


def _paused_fsync(fd):
    if ".pth.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
        time.sleep(PAUSE_S)
    _fsync(fd)


if __name__ == "__main__":
    os.fsync = _paused_fsync
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")
