"""Bundle: an opened, verified bundle (folder or .zip) that can run on this host through its target's Session."""
from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.bundling.verify import Report, verify_folder
from edgekit.targets.base import Artifact

if TYPE_CHECKING:
    from edgekit.model.tokenizer import Tokenizer
    from edgekit.runtime.generate import GenerationResult, StreamFn
    from edgekit.runtime.session import Session
    from edgekit.targets.base import Target

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where bundle .zip files are unpacked: $EDGEKIT_CACHE_DIR/bundles, like every other edgekit cache (else
    $XDG_CACHE_HOME/edgekit/bundles, else ~/.cache/edgekit/bundles). The old $EDGEKIT_CACHE is still read, with a
    warning, when EDGEKIT_CACHE_DIR is unset."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"]) / "bundles"
    if os.environ.get("EDGEKIT_CACHE"):
        log.warning("EDGEKIT_CACHE is deprecated and will be ignored in a later release; set EDGEKIT_CACHE_DIR "
                    "(zip bundles unpack into $EDGEKIT_CACHE_DIR/bundles)")
        return Path(os.environ["EDGEKIT_CACHE"]) / "bundles"
    from edgekit.paths import cache_dir

    return cache_dir() / "bundles"


class Bundle:
    """A verified bundle. `path` is its folder (for a .zip: the unpacked copy; `source` is the zip)."""

    def __init__(self, path: Path, manifest: dict[str, Any], source: Path, report: Report,
                 public_key: str | Path | None = None):
        self.path, self.manifest, self.source, self.report = path, manifest, source, report
        self.public_key = public_key

    @classmethod
    def open(cls, path: str | Path, *, check_target: bool = True, cache_dir: str | Path | None = None,
             public_key: str | Path | None = None) -> Bundle:
        """Open and verify a bundle folder or .zip: the manifest's pin, schema, every named path inside the bundle
        and hashed, every file's hash and size, the target installed. With `public_key` (Ed25519 PEM; needs
        `pip install edgekit[sign]`) manifest.sig must be its valid signature. An unpacked .zip that fails is
        removed from the cache.

        Raises BundleError naming the problem (or UnknownTarget listing the installed targets).
        """
        from edgekit.errors import BundleError

        source = Path(path)
        if not source.exists():
            raise BundleError(f"{source} does not exist; give a bundle folder or .zip")
        if public_key is not None:
            from edgekit.bundling.signing import check_keys_usable

            check_keys_usable(public_key=public_key)  # MissingDependency before a (long) unpack
        folder, root = source, None
        if source.is_file():
            from edgekit.bundling.zipio import unpack

            root = Path(cache_dir) if cache_dir else cache_root()
            try:
                folder = unpack(source, root)
            except OSError as e:   # reading the zip is unpack's BundleError; this is the cache folder refusing
                from edgekit.errors import OutputPathError

                raise OutputPathError(f"cannot unpack {source} into the cache folder {root} ({e.strerror}: "
                                      f"{e.filename}); set EDGEKIT_CACHE_DIR to a writable folder (or pass "
                                      "cache_dir=)") from None
        try:
            report = verify_folder(folder, check_target=check_target, public_key=public_key)
        except BaseException:
            if root is not None:   # never keep (or later reuse) an unpacked copy that did not verify
                from edgekit.bundling.zipio import remove_unpacked

                remove_unpacked(folder, root)
            raise
        return cls(folder, report.manifest, source, report, public_key)

    def __repr__(self) -> str:
        return f"Bundle({self.name!r}, target={self.manifest['target']['name']!r}, path={str(self.path)!r})"

    # ---- what it holds ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def target(self) -> Target:
        from edgekit.targets.registry import get_target

        return get_target(self.manifest["target"]["name"])

    @property
    def artifact(self) -> Artifact:
        """The artifact, rebuilt from the manifest's `artifact` entry over the bundle folder."""
        a = self.manifest["artifact"]
        return Artifact(path=self.path, target=a["target"], files=list(a["files"]), metadata=dict(a["metadata"]))

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(self.manifest["tokenizer"]["stop_ids"])

    @cached_property
    def tokenizer(self) -> Tokenizer:
        from edgekit.model.tokenizer import Tokenizer

        t = self.manifest["tokenizer"]
        template = (self.path / t["chat_template_file"]).read_text(encoding="utf-8") \
            if t.get("chat_template_file") else None
        return Tokenizer((self.path / t["file"]).read_text(encoding="utf-8"), template, t.get("bos_token"),
                         t.get("eos_token"), bool(t.get("add_bos", False)), tuple(t["stop_ids"]))

    # ---- running on this host --------------------------------------------------------------------
    def session(self, **options: Any) -> Session:
        """The target's host Session over this bundle's own files (MissingDependency where this host can't)."""
        return self.target.session(self.artifact, **options)

    def generate(self, prompt: str, *, chat: bool = False, system: str | None = None,
                 stream: StreamFn | None = None, session: Session | None = None,
                 **sampling: Any) -> GenerationResult:
        """Generate with the bundle's artifact, its stop tokens and generation defaults; sampling options override."""
        from edgekit.runtime.generate import generate_text

        sess = session if session is not None else self.session()
        defaults = dict(self.manifest["generation"])
        sampling = {k: v for k, v in sampling.items() if v is not None}
        sampling.setdefault("max_new_tokens", int(defaults.get("max_new_tokens", 128)))
        return generate_text(sess, self.tokenizer, prompt, chat=chat, system=system, stream=stream,
                             defaults=defaults, stop_ids=self.stop_ids, **sampling)

    def verify(self) -> Report:
        """Verify again (the files may have changed since open)."""
        self.report = verify_folder(self.path, public_key=self.public_key)
        return self.report
