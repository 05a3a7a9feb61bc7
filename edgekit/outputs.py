"""Output paths shared by export and bundle: checked before any work, placed by one rename at the end.

Rules: nothing is deleted that edgekit did not write. Without force an existing output (or one that appears while
the run works) is refused and left alone; with force only an earlier edgekit output (an artifact folder with
artifact.json, a bundle folder or .zip with manifest.json) is replaced, never the checkpoint being read, the current
folder or a folder above either. A replacement moves the old output aside, renames the new one in, then removes
the old one, so the output path always holds one complete output.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgekit.errors import DiskFullError, OutputPathError

log = logging.getLogger(__name__)
# errnos of a write that failed because of where it writes (not what): reported as an output problem
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


# ---- before any work ----------------------------------------------------------------------------------------
def check_writable(folder: Path) -> None:
    """OutputPathError unless files can be created in `folder` (or, if it does not exist yet, where it would be
    made): a file in the way and read-only or pseudo file systems are named."""
    probe = folder if folder != Path("") else Path(".")
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"cannot write to {folder}: {probe} is a file, not a folder; choose a folder path")
    if not os.access(probe, os.W_OK) or not _can_create_in(probe):
        raise OutputPathError(f"cannot write to {folder}: {probe} is not writable; choose a writable output folder")


def _can_create_in(folder: Path) -> bool:
    """os.access says yes to root everywhere; a real probe file catches read-only and pseudo file systems too."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output_path(out: Path, force: bool, protected: Iterable[Path] = ()) -> None:
    """Before any work: `out` is free, or (with force) a replaceable edgekit output; its folder is writable."""
    if os.path.lexists(out):
        if not force:
            raise OutputPathError(f"{out} already exists; choose another path or pass force=True (--force) to "
                                  "replace it")
        check_replaceable(out, protected)
    check_writable(out.parent)


def edgekit_output_kind(path: Path) -> str | None:
    """'artifact', 'bundle' or 'bundle zip' when `path` is one edgekit wrote; None for anything else."""
    if path.is_dir():
        if _json_has(path / "artifact.json", ("target", "files", "metadata")):
            return "artifact"
        if _json_has(path / "manifest.json", ("schema_version", "artifact", "files")):
            return "bundle"
        return None
    if path.is_file() and path.suffix == ".zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile):
            return None
        tops = {n.split("/", 1)[0] for n in names}
        if "manifest.json" in names or len(tops) == 1 and f"{next(iter(tops))}/manifest.json" in names:
            return "bundle zip"
    return None


def _json_has(path: Path, keys: tuple[str, ...]) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in keys)


def check_replaceable(out: Path, protected: Iterable[Path] = ()) -> None:
    """With force: `out` may be replaced only if it is an earlier edgekit output and holds nothing being read."""
    here = out.resolve()
    for what, p in [("the current folder", Path.cwd()), *(("the checkpoint being read", q) for q in protected)]:
        p = p.resolve()
        if here == p or here in p.parents:
            where = what if here == p else f"a folder above {what} ({p})"
            raise OutputPathError(f"{out} is {where}; --force never replaces it; choose another output path")
    if edgekit_output_kind(out) is None:
        raise OutputPathError(f"{out} exists and is not an edgekit output (no artifact.json or manifest.json); "
                              "--force replaces only an earlier export or bundle; choose another path")


# ---- the last step ------------------------------------------------------------------------------------------
def place(new: Path, final: Path, *, force: bool, protected: Iterable[Path] = (), keep_as: Path | None = None,
          what: str = "output") -> None:
    """Rename the finished `new` to `final` (same folder, so one rename).

    Without force, an output that appeared at `final` meanwhile (a concurrent run's, or the user's) is left untouched
    and OutputPathError is raised; `new` is then moved to `keep_as` when given. With force an earlier edgekit output
    is moved aside, `new` renamed in, and the old one removed (put back if the rename fails)."""
    old = None
    with _folder_lock(final.parent):
        if os.path.lexists(final) and force:
            check_replaceable(final, protected)
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            _remove(old)
            os.replace(final, old)
        try:
            _rename_noreplace(new, final)
        except OSError as e:
            if old is not None:
                os.replace(old, final)
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
            raise _appeared(new, final, keep_as, what) from None
    if old is not None:
        _remove(old)
    log.info("wrote %s", final)


def _appeared(new: Path, final: Path, keep_as: Path | None, what: str) -> OutputPathError:
    kept = ""
    if keep_as is not None:
        with contextlib.suppress(OSError):
            _rename_noreplace(new, keep_as)
            kept = f"; the finished {what} is kept at {keep_as}"
    return OutputPathError(f"{final} appeared while the {what} was being written (another run, or a folder made "
                           f"there); it is left untouched{kept}. Choose another path, or pass force=True (--force) "
                           "to replace an earlier edgekit output")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself (no lock file left behind) while its output entry changes, so two
    edgekit runs placing outputs there take turns. Nothing to lock with on Windows: the rename checks still hold."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _rename_noreplace(src: Path, dst: Path) -> None:
    """os.rename that never replaces: renameat2(RENAME_NOREPLACE) on Linux (atomic even against other programs),
    else an existence check under the folder lock. os.rename alone would replace an empty folder or a file."""
    fn = _renameat2()
    if fn is not None:
        import ctypes

        if fn(-100, os.fsencode(src), -100, os.fsencode(dst), 1) == 0:   # AT_FDCWD, RENAME_NOREPLACE
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):   # EINVAL: a file system without the flag
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


_RENAMEAT2: list = []


def _renameat2():
    if not _RENAMEAT2:
        fn = None
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            except (AttributeError, OSError):   # glibc < 2.28, musl: fall back
                fn = None
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


# ---- while writing ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def write_errors(folder: Path, needed: int | None = None) -> Iterator[None]:
    """A full disk or a read-only / forbidden folder while writing under `folder` becomes DiskFullError /
    OutputPathError naming the folder (also when a target wrapped the OSError in its own error). The caller
    removes its partial files first (its own except/finally runs inside this block)."""
    try:
        yield
    except Exception as e:
        os_err = _write_oserror(e, folder)
        if os_err is None:
            raise
        # an inner block's error (e.g. the staging folder's) is named again by the outer, user-given folder
        raise _output_error(os_err, folder, needed or getattr(e, "needed", None)) from e


def _write_oserror(e: BaseException | None, folder: Path) -> OSError | None:
    """The OSError behind `e` if it is a full disk or a refused write under `folder` (one elsewhere, e.g. in a
    cache, is not this output's problem and keeps its own error)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in DISK_FULL | UNWRITABLE:
            if e.filename is None:
                return e if e.errno in DISK_FULL else None   # write() errors carry no file name
            return e if _is_under(Path(os.fsdecode(e.filename)), folder) else None
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def _is_under(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def _output_error(e: OSError, folder: Path, needed: int | None) -> OutputPathError:
    if e.errno in DISK_FULL:
        try:
            free = f"{shutil.disk_usage(_existing(folder)).free:,} bytes free there"
        except OSError:
            free = "free space unknown"
        need = f"about {needed:,} bytes needed, " if needed else ""
        err = DiskFullError(f"no space left writing to {folder} ({os.strerror(e.errno)}; {need}{free}); nothing "
                            "was written there; free some space or choose another output folder")
        err.needed = needed
        return err
    return OutputPathError(f"cannot write to {folder} ({os.strerror(e.errno)}: {e.filename or folder}); nothing "
                           "was written there; choose a writable output folder")


def _existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
