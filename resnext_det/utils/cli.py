"""How the command-line tools end on bad input: one message, exit status 2.

A UserError (resnext_det.errors) raised anywhere in a tool, in this process or in one
that detectron2's `launch` spawned, is printed as `error: <message>` and the tool exits
with 2; `RESNEXT_DET_DEBUG=1` adds the traceback. detectron2's training loop logs any
exception with its traceback before re-raising it; `quiet_user_errors` keeps that log
record to the message for a UserError, a diverged training and a full disk.
"""
import contextlib
import ctypes
import errno
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback

from ..errors import UserError

EXIT_USER_ERROR = 2
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}  # writes that cannot go on
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM
_DEBUG = "RESNEXT_DET_DEBUG"


def debugging():
    return os.environ.get(_DEBUG, "") not in ("", "0")


def user_message(error):
    """The message of a UserError; the last line when a DataLoader worker wrapped it."""
    text = str(error).strip()
    if "Original Traceback" in text:  # torch's DataLoader re-raises with the worker's traceback
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def report(error):
    """Print a UserError for a person: the message, and the traceback only when debugging."""
    if debugging():
        traceback.print_exception(error)
    print(f"error: {user_message(error)}", file=sys.stderr, flush=True)


def _one_line(error):
    """The message of an error ExitOnUserError ends a tool on with one line (a UserError, a
    diverged training, a full disk), else None."""
    if isinstance(error, UserError):
        return user_message(error)
    if isinstance(error, FloatingPointError) or (isinstance(error, OSError)
                                                  and error.errno in WRITE_ERRNOS):
        return f"{type(error).__name__}: {error}"
    return None


class _UserErrorFilter(logging.Filter):
    def filter(self, record):
        message = _one_line(record.exc_info[1]) if record.exc_info else None
        if message is not None and not debugging():
            record.msg = f"{record.msg} {message}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_user_errors():
    """detectron2's training loop log records ('Exception during training:', 'Exception in
    writing metrics:') without the traceback of an error the tool ends on with one line."""
    logger = logging.getLogger("detectron2.engine.train_loop")
    if not any(isinstance(f, _UserErrorFilter) for f in logger.filters):
        logger.addFilter(_UserErrorFilter())


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent():
    """In a process that `launch` spawned: SIGTERM when the tool's process ends. torch asks
    for SIGINT, which a shell's background job (`train_net.py ... &`, nohup) ignores: a
    SIGTERM to the tool left its workers training on, orphaned, holding OUTPUT_DIR's lock.
    Linux only (prctl); elsewhere nothing changes."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent.pid:  # the tool ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def interrupts_raise():
    """Ctrl-C raises KeyboardInterrupt again, so that what a tool writes in its finally
    blocks is written: each tool's first lines make Ctrl-C during its imports (seconds of
    torch and detectron2, nothing written yet) end the process quietly (SIG_DFL)."""
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGINT) is signal.SIG_DFL:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Terminated(KeyboardInterrupt):
    """A SIGTERM (a scheduler's, `kill`'s) raised as Ctrl-C is: the finally blocks that
    write what was done run (sigterm_as_interrupt)."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises Terminated inside the block (main thread; one process): predict's
    results json, written in a finally, was lost to a plain `kill`, and a refused start's
    config.yaml stayed in place of the earlier run's."""
    def stop(signum, frame):
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():  # signals go to the main one
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ExitOnUserError:
    """A per-process `main` whose UserError is reported, then the process exits with 2; in a
    spawned process, one that ends with the tool's (end_with_parent).

    A class, not a closure, so that detectron2's `launch` can pickle it for spawned
    processes.
    """

    def __init__(self, main):
        self.main = main

    def __call__(self, *args, **kwargs):
        end_with_parent()
        interrupts_raise()
        alone = multiprocessing.parent_process() is None  # not a spawned worker
        try:
            # a tool's own process: SIGTERM as Ctrl-C (its finally blocks run; exit 143). A
            # spawned worker keeps SIGTERM's default: a handler waits for a collective to
            # return, which a dead peer's never does
            with sigterm_as_interrupt() if alone else contextlib.nullcontext():
                return self.main(*args, **kwargs)
        except UserError as e:
            report(e)
            sys.exit(EXIT_USER_ERROR)
        except FloatingPointError as e:  # detectron2: "Loss became infinite or NaN at ..."
            if debugging():
                raise
            found = str(e).replace("\n", "; ")  # the loss dict on a line of its own
            print(f"error: the training diverged ({found}). Lower SOLVER.BASE_LR or raise "
                  "SOLVER.WARMUP_ITERS, and check the boxes of the data; the checkpoints "
                  "written before stay whole.", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        except OSError as e:  # a full disk, a read-only or vanished folder: not a bug
            if e.errno not in WRITE_ERRNOS or debugging():
                raise
            print(f"error: {e.filename or 'a file'}: {e.strerror}. Free space there, or give "
                  "the output another folder; files written whole before stay.", file=sys.stderr,
                  flush=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt as e:  # Ctrl-C: what was written is whole (atomic writes)
            if debugging():
                raise
            if not alone:  # the tool's process says it once for all (run_tool)
                sys.exit(EXIT_INTERRUPTED)
            _say_stopped(isinstance(e, Terminated))


def _say_stopped(terminated):
    """End a tool stopped by SIGTERM (`terminated`) or Ctrl-C: one line, exit 143 or 130."""
    print("terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)", file=sys.stderr,
          flush=True)
    sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def parse_launch_args(parser, argv=None):
    """parser.parse_args(argv), with detectron2's launch options checked: --num-gpus and
    --num-machines >= 1, 0 <= --machine-rank < --num-machines (launch took -1 processes for
    one, and a rank past the machines for a valid one)."""
    args = parser.parse_args(argv)
    for option, value in (("--num-gpus", args.num_gpus), ("--num-machines", args.num_machines)):
        if value < 1:
            parser.error(f"{option} {value}: expected >= 1 (processes per machine, machines)")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(f"--machine-rank {args.machine_rank}: expected 0..{args.num_machines - 1} "
                     f"(this machine's index among --num-machines {args.num_machines})")
    check_dist_url(parser, args.dist_url, args.num_gpus * args.num_machines, args.num_machines)
    return args


# what torch.distributed's rendezvous takes (launch passes --dist-url to init_process_group)
_DIST_URL = re.compile(r"tcp://(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):\d{1,5}|file:///.+|env://")


def check_dist_url(parser, url, world_size, num_machines):
    """--dist-url, which only a run of several processes reads: 'auto' on one machine (a free
    local port), else tcp://HOST:PORT, file:///PATH or env:// (torch raised "No rendezvous
    handler" in each process, and detectron2 asserted on 'auto' across machines)."""
    if world_size == 1 or (url == "auto" and num_machines == 1) or _DIST_URL.fullmatch(url):
        return
    where = "across machines: " if url == "auto" else ""
    parser.error(f"--dist-url {url}: expected {where}tcp://HOST:PORT (the rank-0 machine's "
                 "address and a free port), file:///SHARED/FILE or env://"
                 + ("" if num_machines > 1 else ", or auto (a free port on this machine)"))


def _end_workers(grace):
    """Wait up to `grace` seconds for the processes `launch` spawned (a terminal's Ctrl-C
    reached them too: they finish what they write), then SIGTERM those still running (a
    Ctrl-C or `kill -INT` of this process alone: they trained on, and this one waited on
    them at its exit for good)."""
    workers = multiprocessing.active_children()
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
        worker.join()


def run_tool(launch_fn, grace=10.0):
    """Call `launch_fn()`; a spawned process that exited with 2 makes this one exit with 2.

    With --num-gpus N this process waits on its workers: a Ctrl-C or SIGTERM to it, or one
    that ended a worker, ends the tool as a single process does (one line, exit 130 or
    143; it was a KeyboardInterrupt traceback, or a silent death by signal)."""
    import torch.multiprocessing as mp

    interrupts_raise()
    try:
        with sigterm_as_interrupt():
            return launch_fn()
    except mp.ProcessExitedException as e:  # torch has ended the other workers
        if e.exit_code == EXIT_USER_ERROR:
            sys.exit(EXIT_USER_ERROR)
        if e.exit_code in (EXIT_INTERRUPTED, EXIT_TERMINATED) or e.signal_name in (
                "SIGINT", "SIGTERM"):
            _say_stopped(e.exit_code == EXIT_TERMINATED or e.signal_name == "SIGTERM")
        raise
    except KeyboardInterrupt as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback here
        _end_workers(0.0 if isinstance(e, Terminated) else grace)
        if debugging():
            raise
        _say_stopped(isinstance(e, Terminated))
