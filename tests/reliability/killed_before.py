"""Run a tool, `python killed_before.py NAME TOOL ARGS...`, that SIGKILLs itself just before
it renames a file onto one named NAME (atomic_write's last step): a kill between two writes,
where a timer from outside would seldom land.
"""
import os
import runpy
import signal
import sys

_replace = os.replace


def _killing_replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) == KILL_BEFORE:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)


if __name__ == "__main__":
    KILL_BEFORE = sys.argv[1]
    os.replace = _killing_replace
    sys.argv = sys.argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")
