"""One writer per result, and results that appear whole: locks, private partial names, publication.

    with exclusive(final):                       # blocks while another process writes this result
        remove_leftovers(final)                  # partials of runs that died (nobody else writes now)
        tmp = fresh_folder(partial_name(final))  # private to this run
        with removed_on_failure(tmp):            # an error, Ctrl-C or SIGTERM takes the partial with it
            ...                                  # write into tmp
            publish(tmp, final)                  # rename into place; an older result moved aside first

Locks are `fcntl.flock` on a hidden `.<name>.lock` beside the result, released when the process
dies, so a crashed run never blocks the next one; the holder removes the file when it is done.
Partial names carry the process id and a random token, so two runs never write into one partial
folder.
"""
import contextlib
import fcntl
import os
import shutil
import uuid
from pathlib import Path

from utils import ASVFIError


class WriteError(ASVFIError):
    """A result could not be written (disk full, read-only folder): the run stops, partials removed."""


@contextlib.contextmanager
def write_errors_named(where, kept, what="the results", error_type=WriteError):
    """Disk full, read-only folder, ...: one clear `error_type` naming where, `what` could not be
    written and what was `kept`, and the run stops."""
    try:
        yield
    except OSError as error:
        raise error_type(f"{where}: cannot write {what} ({error}); free disk space or fix the "
                         f"folder's permissions, then run again ({kept})") from error


def lock_path(final):
    final = Path(final)
    return final.with_name(f".{final.name}.lock")


class Busy(Exception):
    """Another process holds the lock (raised by exclusive(..., wait=False)); args[0] is the lock file."""


@contextlib.contextmanager
def exclusive(final, wait=True):
    """Hold the lock of one result for the duration of the block, across processes. wait=False raises
    Busy at once when another process holds it. The holder removes the lock file before letting go, so
    finished results leave none behind."""
    path = lock_path(final)
    handle = locked_file(path, wait)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile: nothing to clean
            path.unlink()  # while still held: a process that opened it meanwhile sees it gone and retries
        handle.close()


def locked_file(path, wait):
    """`path` opened and flocked. A file that its last holder removed between our open and our flock is
    opened again: the new file is the lock."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a")
        except FileNotFoundError:  # the folder went with the last holder's lock file
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise Busy(path) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                return handle
        handle.close()


def partial_name(final):
    """A temporary name beside `final`, private to this run; the suffix keeps the container format.
    It starts with final's whole name, so results whose names differ only after a dot (`clip.v2`,
    `clip.v3`) never share a prefix of partials."""
    final = Path(final)
    return final.with_name(f"{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")


def is_partial(path):
    """Whether `path` is a partial_name (a result still being written, or left by a run that died)."""
    return ".partial-" in Path(path).name


def remove_leftovers(final):
    """Delete partials of `final` left by interrupted runs; call with final's lock held."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for leftover in final.parent.glob(f"{final.name}.partial*"):
        remove(leftover)


def remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def removed_on_failure(*paths):
    """Partial results (files or folders; None is skipped) are deleted when the block fails, whatever
    the error: a Ctrl-C or a SIGTERM unwinding the process (cli.sigterm_unwinds) too."""
    try:
        yield
    except BaseException:
        for path in paths:
            if path is not None:
                remove(path)
        raise


def fresh_folder(path):
    remove(path)
    Path(path).mkdir(parents=True)
    return Path(path)


def publish(tmp, final):
    """Rename a complete `tmp` into place (the caller holds final's lock). A folder already there is
    renamed aside first and deleted after, so `final` is at every moment either the old or the new result."""
    final = Path(final)
    if final.is_dir():
        old = partial_name(final)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final
