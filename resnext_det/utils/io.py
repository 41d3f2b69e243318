"""Writes that never leave a half-written file behind."""
import contextlib
import glob
import os
import shutil


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported everywhere (Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call write(file) on a temporary file next to `path`, sync it, rename it to `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return path


def process_runs(pid):
    """Whether process `pid` runs on this machine (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextlib.contextmanager
def staged_folder(folder):
    """Yield a staging folder whose files move into `folder` when the block ends without an
    error, each replacing its old version in one rename: a kill or an error while they are
    written leaves the previous ones whole. The staging folder, `folder/.staging.tmp-<pid>`,
    is removed after; those of processes that no longer run are removed on entry."""
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(glob.escape(folder), ".staging.tmp-*")):
        pid = stale.rsplit(".tmp-", 1)[1]
        if not (pid.isdigit() and process_runs(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    staging = os.path.join(folder, f".staging.tmp-{os.getpid()}")
    os.makedirs(staging, exist_ok=True)
    try:
        yield staging
        for name in sorted(os.listdir(staging)):
            fd = os.open(os.path.join(staging, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
        _fsync_dir(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
