"""Writes that never leave a half-written file behind, and folders that one run owns."""
import contextlib
import errno
import glob
import os
import re
import shutil
import time

from ..errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no folder locks
    fcntl = None


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported everywhere (Windows): the rename is still atomic
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _interrupt_kept(write, f):
    """write(f); a Ctrl-C or SIGTERM (a KeyboardInterrupt) inside it comes out as itself.
    torch.save's zip writer, closed on the way out, raised a RuntimeError of its own over it
    ("unexpected pos ... vs ..."): the run ended with a traceback and status 1, not 130."""
    try:
        write(f)
    except Exception as e:
        cause = e.__context__
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


def atomic_write(path, write):
    """Call write(file) on a temporary file next to `path`, sync it, rename it to `path`.
    The temporaries of `path` that killed writers left (`<path>.tmp-<pid>` of a process that no
    longer runs: a SIGKILL skips the removal below) are removed first, or no run would."""
    for stale in left_by_ended_writers(f"{glob.escape(path)}.tmp-*"):
        with contextlib.suppress(FileNotFoundError):  # another writer removed it first
            os.remove(stale)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            _interrupt_kept(write, f)
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


def left_by_ended_writers(pattern, mark=".tmp-"):
    """The files matching `pattern` (a path with a glob in its name, e.g. `dir/*.tmp-*`) whose
    `<mark><pid>` writer no longer writes: that process is gone, or it is this one (which is
    writing none at the time of asking). A live writer's temporary is never among them."""
    folder, name = os.path.split(pattern)
    found = []
    for path in glob.glob(os.path.join(glob.escape(folder), name)):
        pid = path.rsplit(mark, 1)[1]
        if not (pid.isdigit() and int(pid) != os.getpid() and process_runs(int(pid))):
            found.append(path)
    return found


@contextlib.contextmanager
def staged_folder(folder, last=None):
    """Yield a staging folder whose files move into `folder` when the block ends without an
    error, each replacing its old version in one rename: a kill or an error while they are
    written leaves the previous ones whole. The staging folder, `folder/.staging.tmp-<pid>`,
    is removed after; those of processes that no longer run are removed on entry.

    `last`: the name of a file that vouches for the others (an evaluation's metrics): its old
    version is removed before they move (also when the block wrote none), and a new one
    moves after them, so that it never sits beside files of another run."""
    os.makedirs(folder, exist_ok=True)
    for stale in left_by_ended_writers(os.path.join(folder, ".staging.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
    staging = os.path.join(folder, f".staging.tmp-{os.getpid()}")
    os.makedirs(staging, exist_ok=True)
    try:
        yield staging
        names = sorted(os.listdir(staging), key=lambda name: (name == last, name))
        if names and last and os.path.exists(os.path.join(folder, last)):
            os.remove(os.path.join(folder, last))
        for name in names:
            _fsync_file(os.path.join(staging, name))
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
        _fsync_dir(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replaceable(folder):
    """Whether replaced_folder can swap `folder` in one rename: it is none yet, or a folder
    of its own. Not a symbolic link (the rename moves the link: the new files would land in
    a folder made in its place, the link left as `<folder>.old.tmp-<pid>`), a mount point
    (a Docker volume, say: the rename fails, EBUSY), nor the working directory or a folder
    above it ("." fails, EBUSY; by its path, the process goes on in a removed folder)."""
    folder = os.path.normpath(folder)  # "link/" reads as the folder it points to
    if os.path.islink(folder):
        return False
    if not os.path.isdir(folder):
        return True
    real, cwd = os.path.realpath(folder), os.path.realpath(os.getcwd())
    mounted = os.path.ismount(real) or real in _mount_points()
    return not mounted and os.path.commonpath([real, cwd]) != real


def _mount_points():
    """The mount points of this process (Linux's /proc/self/mountinfo, 5th field, its
    spaces and such written as octal escapes): os.path.ismount compares devices, and misses
    a bind mount of a folder of the same file system. Empty where there is no such file."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            fields = [line.split()[4] for line in f]
    except OSError:
        return set()
    return {re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
            for field in fields}


@contextlib.contextmanager
def replaced_folder(folder):
    """Yield a staging folder, `<folder>.staging.tmp-<pid>`, that replaces `folder` whole when
    the block ends without an error: `folder` is renamed to `<folder>.old.tmp-<pid>`, the
    staging folder to `folder`, and the old one removed. A kill leaves the previous files or
    the new ones, never some of each (staged_folder moves them one by one), or, between the
    two renames, no `folder`, which the next entry puts back from the old one. Leftovers of
    processes that no longer run are removed on entry. For a folder only its writer fills
    (an evaluation's inference/<dataset>/, an export's --output) and that is `replaceable`."""
    folder = os.path.normpath(folder)  # "out/": its siblings are out.staging..., not out/...
    put_back_replaced(folder)
    staging, old = f"{folder}.staging.tmp-{os.getpid()}", f"{folder}.old.tmp-{os.getpid()}"
    os.makedirs(staging)
    try:
        yield staging
        for name in sorted(os.listdir(staging)):
            _fsync_file(os.path.join(staging, name))
        if os.path.isdir(folder):
            os.rename(folder, old)
        os.rename(staging, folder)
        _fsync_dir(os.path.dirname(os.path.abspath(folder)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def put_back_replaced(folder):
    """What replaced_folder calls on entry: a `<folder>.old.tmp-<pid>` of an ended process
    becomes `folder` again if there is none (the kill came between the two renames), else is
    removed, and so are ended processes' staging folders."""
    folder = os.path.normpath(folder)
    stem = os.path.join(os.path.dirname(folder), glob.escape(os.path.basename(folder)))
    for old in left_by_ended_writers(f"{stem}.old.tmp-*", ".old.tmp-"):
        if not os.path.exists(folder):
            os.rename(old, folder)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in left_by_ended_writers(f"{stem}.staging.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


LOCK_NAME = ".lock"
_held = {}  # realpath of a lock file -> [its open file, takes not yet released]


def lock_folder(folder):
    """Take `folder`'s lock: an exclusive POSIX lock (lockf) on folder/.lock, held until
    release_folder or the end of this process (the system drops it then, kill -9 included, so
    a dead run's lock never stays). A POSIX lock is the process's own: the data loader's
    forked workers do not inherit it (they would keep an flock after their parent ended).
    Taken again by the process that holds it, it counts: each take is given back by one
    release_folder (the demo's claim outlives the training's take: it draws from the
    checkpoint after). Returns None once held, or the pid written by the process that holds it."""
    path = os.path.realpath(os.path.join(folder, LOCK_NAME))
    if fcntl is None:
        return None
    if path in _held:
        _held[path][1] += 1
        return None
    f = open(path, "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):  # a file system without locks (NFS)
            f.close()
            return None
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        return holder
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held[path] = [f, 1]
    return None


def release_folder(folder):
    """Give back one take of the lock lock_folder took; the last one drops it (no-op when
    this process holds none)."""
    path = os.path.realpath(os.path.join(folder, LOCK_NAME))
    if path not in _held:
        return
    _held[path][1] -= 1
    if _held[path][1] == 0:
        _drop_lock(path)


def _drop_lock(path):
    """Close the lock file at `path` (the realpath _held keys it by), all takes at once."""
    f, _ = _held.pop(path)
    f.truncate(0)
    f.close()  # closing drops the lock


class FolderError(UserError, ValueError):
    """An output folder that is a file, or cannot be made."""


def move_aside(folder):
    """Move `folder`, which this process holds locked (one take of lock_folder), whole to
    aside_name(folder) in one rename, so that a kill leaves it either here or there; its lock
    is given back. Returns the new name; a FolderError if it cannot be moved."""
    lock, kept = os.path.realpath(os.path.join(folder, LOCK_NAME)), aside_name(folder)
    try:
        os.rename(folder, kept)
    except OSError as e:  # e.g. the folder above it cannot be written
        release_folder(folder)
        raise FolderError(f"{folder!r} holds an earlier run, which cannot be kept as {kept!r} "
                          f"({e.strerror}); give the output another folder.") from None
    _drop_lock(lock)
    return kept


def claim_folder(folder, mark, text, own=None):
    """Make `folder` the output of one tool: new, empty, or one it wrote before (its `mark`
    file, written with `text`). Returns the names of the files a folder holds that the tool
    did not write (the folder is then left as it was), or [] once it is claimed and locked
    (lock_folder: two runs of the tool into it at once replaced each other's files). A path
    that is a file, or under one, or not UTF-8 (OpenCV crashed on it), is a FolderError.

    `own`: None, any file of a marked folder is the tool's; else its fixed names, and the
    mark lists after `text` what else the tool wrote there (mark_written), so that a user's
    file put in since is one of the others (a re-run replaced a holiday.png of the user's)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FolderError(f"{folder!r} is a file, not a folder; give the output a folder.")
    if not utf8_name(folder):
        raise FolderError(f"{folder!r}: the name is not UTF-8, which OpenCV and TorchScript "
                          "cannot write to; give the output a UTF-8 name.")
    listed = _listed_names(folder, mark, text) if own is not None else None
    if os.path.isdir(folder):
        others = sorted(set(os.listdir(folder)) - {LOCK_NAME})  # a training's lock, no file
        if os.path.isfile(os.path.join(folder, mark)):
            mine = set(others) if listed is None else {mark, *own, *listed}
            others = [n for n in others if n not in mine and ".tmp-" not in n]
        if others:
            return others
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:  # under a file, no permission, read-only file system
        raise FolderError(f"{folder!r} cannot be made as a folder ({e.strerror}); give the "
                          "output a folder that can be written.") from None
    holder = lock_folder(folder)
    if holder is not None:
        raise FolderError(f"{folder!r}: process {holder} writes in it (it holds {LOCK_NAME}): "
                          "wait until it ends, or give the output another folder.")
    if own is None or listed is None:  # new, or marked before marks listed files: all its own
        before = sorted(set(os.listdir(folder)) - {LOCK_NAME, mark}) if own is not None else []
        atomic_write(os.path.join(folder, mark),
                     lambda f: f.write((text + "".join(f"{n}\n" for n in before)).encode()))
    return []


def _listed_names(folder, mark, text):
    """The names a listing mark holds after its `text`; None without one (none, or a mark
    written before marks listed the files)."""
    try:
        with open(os.path.join(folder, mark), encoding="utf-8") as f:
            content = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    return content[len(text):].splitlines() if content.startswith(text) else None


def mark_written(folder, mark, name):
    """Add `name` to the files `folder`'s listing mark says its tool wrote (before the file
    is written: a kill during the write leaves it listed)."""
    with open(os.path.join(folder, mark), "a", encoding="utf-8") as f:
        f.write(f"{name}\n")


def aside_name(path):
    """A free `<path>.before-<time>` name (then -2, -3, ... within one second), for what a
    new run keeps of an earlier one instead of replacing it."""
    path = os.path.normpath(path)  # "out/": beside it, out.before-..., not out/.before-...
    stamp = name = f"{path}.before-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.exists(name):
        n += 1
        name = f"{stamp}-{n}"
    return name


def put_back_aside(folder, kept, attempt_files):
    """Undo move_aside / aside_name after a refused attempt: when `folder` holds no more than
    `attempt_files` (what a refused start writes: its config.yaml, log.txt, a lock), it is
    removed and `kept` is renamed back; so refused attempts leave the earlier run in place,
    not one `.before-<time>` folder more each. Returns whether it was put back."""
    if not (kept and os.path.isdir(kept)):
        return False
    if os.path.isdir(folder) and not set(os.listdir(folder)) <= set(attempt_files):
        return False  # the attempt wrote results: both stay
    try:
        if os.path.isdir(folder):  # a start refused before it wrote anything makes none
            shutil.rmtree(folder)
        os.rename(kept, folder)
    except OSError:  # then the earlier run stays where the warning said
        return False
    return True


def utf8_name(path):
    """Whether `path` is UTF-8 (os.fsdecode keeps other bytes as surrogates, which OpenCV's
    imwrite and VideoCapture crash on: a segmentation fault)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
