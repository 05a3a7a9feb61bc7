"""Atomic output: everything is written in a hidden staging folder beside the output, then renamed into place."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.bundling.reader import Bundle

log = logging.getLogger(__name__)
PARTIAL = ".partial-"


def _partial_prefix(final: Path) -> str:
    return f".{final.name}{PARTIAL}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(final: Path) -> None:
    """Remove staging folders of earlier runs for the same output that were killed (their process is gone)."""
    if not final.parent.is_dir():
        return
    for p in final.parent.glob(_partial_prefix(final) + "*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a killed run", p)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `final` (same filesystem, so the last step is a rename); always removed."""
    stage = final.parent / f"{_partial_prefix(final)}{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def finalize(folder: Path, final: Path, *, zip: bool, force: bool, protected: Iterable[Path] = ()) -> Bundle:
    """Move the finished bundle folder to `final` (or zip it there) in one rename; verify and open the result.

    An output that appeared at `final` meanwhile is refused (untouched) unless force; edgekit.outputs.place."""
    from edgekit.bundling.reader import Bundle
    from edgekit.outputs import place, write_errors

    checked = Bundle.open(folder)  # what we wrote must verify before it appears at the output path
    src = folder
    if zip:
        from edgekit.bundling.zipio import write_zip

        src = folder.parent / final.name  # in the staging folder too, so placing it is one rename
        with write_errors(final.parent, needed=checked.report.bytes_checked):
            write_zip(folder, src)
    place(src, final, force=force, protected=protected, what="bundle")
    log.info("wrote bundle %s", final)
    if zip:
        return Bundle.open(final)  # unpacked into the cache: the Bundle runs from there
    checked.report.path = final
    return Bundle(final, checked.manifest, final, checked.report)  # the same files, verified a moment ago
