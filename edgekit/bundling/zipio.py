"""Zip a bundle folder, and unpack a bundle .zip safely: nothing is ever written outside the destination."""
from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from pathlib import Path

from edgekit.bundling.manifest import MANIFEST, safe_relpath
from edgekit.errors import BundleError
from edgekit.hashing import file_sha256

log = logging.getLogger(__name__)
# Zip-bomb bounds, checked on the entry headers before anything is written and again on the bytes inflated.
MAX_ENTRIES = 10_000                 # a bundle holds tens of files (an .mlpackage a few hundred)
MAX_UNPACKED_BYTES = 64 << 30        # more than any phone model
MAX_RATIO = 200                      # inflated/compressed per entry: weights barely compress, JSON ~10x
RATIO_FLOOR_BYTES = 1 << 20          # entries smaller than this cannot hurt, whatever their ratio


def write_zip(folder: Path, dest: Path) -> None:
    """Zip `folder` as `<folder name>/...` entries into `dest` (written beside it, then renamed). Level 1: weights
    barely compress at any level, and higher levels cost minutes on a 600 MB model."""
    tmp = dest.with_name(f".{dest.name}.partial-zip-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def zip_sha256(path: Path) -> str:
    return file_sha256(path)


def _entries(zf: zipfile.ZipFile, zpath: Path) -> tuple[str, list[zipfile.ZipInfo]]:
    """The common top folder ('' if none) and the file entries; refuses unsafe names, links and bombs."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BundleError(f"{zpath} has {len(infos)} entries, more than a bundle holds (at most {MAX_ENTRIES}); "
                          "refused as a possible zip bomb (nothing unpacked)")
    total = 0
    for info in infos:
        name = info.filename.rstrip("/") if info.is_dir() else info.filename
        if not safe_relpath(name):
            raise BundleError(f"{zpath}: entry {info.filename!r} points outside its folder; refused (nothing unpacked)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"{zpath}: entry {info.filename!r} is a symbolic link; refused (nothing unpacked)")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(f"{zpath}: entry {info.filename!r} inflates {info.compress_size} bytes to "
                              f"{info.file_size} (ratio above {MAX_RATIO}); refused as a possible zip bomb "
                              "(nothing unpacked)")
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise BundleError(f"{zpath} claims {total} unpacked bytes (at most {MAX_UNPACKED_BYTES}); refused as a "
                          "possible zip bomb (nothing unpacked)")
    files = [i for i in infos if not i.is_dir()]
    names = [i.filename for i in files]
    if MANIFEST in names:
        return "", files
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
        return next(iter(tops)), files
    raise BundleError(f"{zpath} is not a bundle zip: no {MANIFEST} at its root or in a single top folder")


def unpack(zpath: Path, cache_root: Path) -> Path:
    """Unpack `zpath` into cache_root/<sha256 prefix>/<name> (reused when already there); returns the bundle folder."""
    try:
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile as e:
        raise BundleError(f"{zpath} is truncated or not a zip file ({e})") from None
    except OSError as e:
        raise BundleError(f"{zpath} cannot be read ({e})") from None
    with zf:
        top, files = _entries(zf, zpath)
        key = zip_sha256(zpath)[:20]
        dest_root = cache_root / key
        name = top or zpath.stem
        folder = dest_root / (name if safe_relpath(name) and "/" not in name else "bundle")
        if (folder / MANIFEST).is_file():
            return folder  # already unpacked; the caller verifies every hash anyway
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = cache_root / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            base = (tmp / folder.name).resolve()
            inflated = 0
            for info in files:
                rel = info.filename[len(top) + 1:] if top else info.filename
                target = (base / rel).resolve()
                if not target.is_relative_to(base):  # belt and braces after safe_relpath
                    raise BundleError(f"{zpath}: entry {info.filename!r} points outside its folder; refused")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    inflated = _copy_bounded(src, dst, inflated, zpath)
            shutil.rmtree(dest_root, ignore_errors=True)
            tmp.rename(dest_root)
        except zipfile.BadZipFile as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"{zpath} is damaged ({e})") from None
        except (EOFError, zlib_error()) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"{zpath} is truncated or damaged ({e})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("unpacked %s into %s", zpath, folder)
    return folder


def _copy_bounded(src, dst, inflated: int, zpath: Path) -> int:
    """Copy one entry, counting inflated bytes against MAX_UNPACKED_BYTES whatever the headers claimed."""
    while block := src.read(1 << 22):
        inflated += len(block)
        if inflated > MAX_UNPACKED_BYTES:
            raise BundleError(f"{zpath} inflates to more than {MAX_UNPACKED_BYTES} bytes; refused as a possible "
                              "zip bomb (the partial copy is removed)")
        dst.write(block)
    return inflated


def remove_unpacked(folder: Path, cache_root: Path) -> None:
    """Remove an unpacked copy (its cache_root/<key>/ folder) that failed verification; only ever inside
    cache_root."""
    key_dir = folder.parent
    root = cache_root.resolve()
    if key_dir.resolve().parent == root and key_dir.resolve() != root:
        shutil.rmtree(key_dir, ignore_errors=True)
        log.info("removed %s, which failed verification", key_dir)


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error
