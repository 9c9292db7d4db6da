"""Write every output atomically: a temporary file beside it, then one rename; nothing on failure.

One helper for every writer in the project (MP4, PLY, NPZ, PNG, pickles, JSON, checkpoints), so
that a crash, Ctrl-C or full disk never leaves a half-written output or a stray temporary file,
and outputs get the permissions the user's umask asks for (temporary files are created 0600).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from avatar.errors import TalkingAvatarError

__all__ = ["atomic_path", "atomic_folder", "atomic_write_text", "check_output_path"]

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore, under a lock (threads share the umask)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_path(path: str | Path, *, what: str = "output", folder: bool = False) -> Path:
    """Check, before any slow work, that `path` can be written as a file (or, with `folder`,
    created or replaced as a folder); returns it.

    Its parent may not exist yet (it is created), but nothing on the way may be a file, a file
    path may not be an existing folder (nor a folder path an existing file), and the nearest
    existing parent must be writable.

    Raises:
        TalkingAvatarError: one line naming the problem and the fix.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise TalkingAvatarError(f"{what} {path} is a file; choose a folder path")
    if not folder and path.is_dir():
        raise TalkingAvatarError(f"{what} {path} is a folder; give a file name, e.g. {path}/out")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise TalkingAvatarError(
                    f"{what} {path}: {parent} is a file, not a folder; choose another path"
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise TalkingAvatarError(
                    f"{what} {path}: folder {parent} is not writable; choose another path"
                )
            break
    return path


def _make_parent(path: Path, what: str, *, folder: bool = False) -> None:
    check_output_path(path, what=what, folder=folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TalkingAvatarError(
            f"cannot create folder {path.parent} ({err.strerror}); choose another path"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | Path, *, what: str = "output") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds.

    The temporary name keeps `path`'s suffix (writers such as numpy and ffmpeg choose the
    format by it). On success the file is flushed to disk, given the umask's permissions and
    renamed over `path` in one step; on any exception (KeyboardInterrupt included) it is removed
    and `path` is left as it was.

    Raises:
        TalkingAvatarError: the folder cannot be created or written.
    """
    path = Path(path)
    _make_parent(path, what)
    try:
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
        )
    except OSError as err:
        raise TalkingAvatarError(
            f"cannot write {what} {path} ({err.strerror}); choose a writable path"
        ) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, TalkingAvatarError):
            raise TalkingAvatarError(
                f"cannot write {what} {path} ({err.strerror or err}); check the path and free space"
            ) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, *, what: str = "output") -> Path:
    """Write a text file atomically (UTF-8); returns its path."""
    path = Path(path)
    with atomic_path(path, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, what: str = "output folder") -> Iterator[Path]:
    """A temporary folder beside `path` to fill; it replaces `path` when the block succeeds.

    An existing `path` is moved aside first and removed only once the new folder is in place,
    so a failure at any point leaves either the old folder or the new one, never a mix.
    """
    path = Path(path)
    _make_parent(path, what, folder=True)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise TalkingAvatarError(
            f"cannot write {what} {path} ({err.strerror}); choose a writable path"
        ) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
