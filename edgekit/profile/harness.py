"""Run the measurement on a device: in this process (local) or by pushing the bundle + runner (ssh, adb, ios)."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError, ProfileSettingError
from edgekit.profile.bundles import BundleRef, load_session_module, shipped_session, standalone_module
from edgekit.profile.devices import CommandTimeout, Device

log = logging.getLogger("edgekit.profile")
RUNNER_FILE = Path(__file__).with_name("runner.py")
SPECULATE_FILE = Path(__file__).parent.parent / "runtime" / "speculate.py"   # pushed as edgekit_speculate.py
EventFn = Callable[[dict[str, Any]], None]
STORAGE_MARGIN = 1.10           # free space needed: bundle + runner, plus 10 %
STORAGE_SLACK_BYTES = 4 << 20


@dataclass(frozen=True)
class Settings:
    prompt_lengths: tuple[int, ...] = (64, 256, 1024)
    decode_tokens: int = 128
    runs: int = 3
    warmup: int = 1
    threads: int | None = None
    seed: int = 0
    op_profile: bool = True
    timeout_s: float = 1800.0
    # after the timed runs: the shipped prompt set (edgekit/evaldata/speculation) decoded plainly and with
    # speculation, decode_tokens each, where the bundle returns every position's logits
    speculate: str = "ngram"

    def __post_init__(self) -> None:
        bad = [n for n in self.prompt_lengths if n < 1]
        if not self.prompt_lengths or bad:
            raise ProfileSettingError(f"prompt lengths must be positive integers, got {list(self.prompt_lengths)}")
        if self.decode_tokens < 1 or self.runs < 1 or self.warmup < 0:
            raise ProfileSettingError(f"need decode_tokens >= 1, runs >= 1, warmup >= 0; got {self.decode_tokens}, "
                                      f"{self.runs}, {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ProfileSettingError(f"threads must be at least 1 (or unset for the runtime's default), got "
                                      f"{self.threads}")
        if self.speculate not in ("ngram", "off"):
            raise ProfileSettingError(f"speculate={self.speculate!r}; accepted: ngram, off")
        if not self.timeout_s > 0:
            raise ProfileSettingError(f"timeout must be a positive number of seconds, got {self.timeout_s}")

    def check_fits(self, max_seq_len: int | None, where: str) -> None:
        """Every prompt plus its decoded tokens must fit the bundle's KV cache: measuring fewer lengths than asked
        and calling the run complete would be a silent wrong result, so refuse before any device work."""
        if not max_seq_len:
            return
        too_long = [n for n in self.prompt_lengths if n + self.decode_tokens > int(max_seq_len)]
        if too_long:
            fits = int(max_seq_len) - self.decode_tokens
            raise ProfileSettingError(
                f"{where} holds {max_seq_len} tokens, but prompt length(s) {too_long} + {self.decode_tokens} decode "
                f"tokens need more; use prompt lengths of at most {fits} (or fewer decode tokens), or export with a "
                "larger max_seq_len")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_lengths"] = list(self.prompt_lengths)
        return d

    def key(self) -> str:
        """What must match for two runs to be comparable (timeout does not change the numbers)."""
        d = self.as_dict()
        d.pop("timeout_s")
        return json.dumps(d, sort_keys=True)


@dataclass
class Collected:
    """What a device run produced, complete or not."""

    events: list[dict[str, Any]] = field(default_factory=list)
    runner: dict[str, Any] = field(default_factory=dict)
    error: DeviceError | None = None

    def add(self, event: dict[str, Any], on_event: EventFn | None) -> None:
        self.events.append(event)
        if on_event is not None:
            on_event(event)

    @property
    def complete(self) -> bool:
        """Done, with no error and nothing skipped (a skipped prompt length is a measurement that was asked for)."""
        return (self.error is None and any(e.get("event") == "done" for e in self.events)
                and not any(e.get("event") == "skip" for e in self.events))


def runner_settings(ref: BundleRef, settings: Settings) -> dict[str, Any]:
    """The settings the runner gets: the profile's, plus the speculation prompts as token ids (the device has no
    tokenizer), rendered with the bundle's chat template (plain text for a base model)."""
    doc = settings.as_dict()
    if settings.speculate == "off":
        return doc
    try:
        tok, stop_ids = _tokenizer(ref)
    except Exception as e:  # noqa: BLE001 - the timed runs stay valid without the speculation figures
        doc["speculation_unavailable"] = f"the bundle's tokenizer could not be read ({type(e).__name__}: {e})"
        return doc
    from edgekit.evaldata import speculation_prompts

    prompts = []
    for kind, items in speculation_prompts().items():
        for item in items:
            text = (tok.apply_chat_template([{"role": "user", "content": item["prompt"]}]) if tok.chat_template
                    else item["prompt"])
            prompts.append({"id": item["id"], "kind": kind,
                            "ids": tok.encode(text, add_special_tokens=not tok.chat_template)})
    doc.update(speculation_prompts=prompts, stop_ids=list(stop_ids), speculation_tokens=settings.decode_tokens)
    return doc


def _tokenizer(ref: BundleRef) -> tuple[Any, tuple[int, ...]]:
    if ref.opened is not None:
        return ref.opened.tokenizer, ref.opened.stop_ids
    from edgekit.model.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(ref.path)
    return tok, tok.stop_ids


def run_local(ref: BundleRef, settings: Settings, session_module: str | None, on_event: EventFn | None) -> Collected:
    """In this process, through ONE standalone session module for every timed and per-op run: `session_module`
    (the user's), else the bundle's own hashed copy (checked again as it is imported), else the installed target's.
    Only a target with no standalone session at all is timed through its host Session (Target.session)."""
    from edgekit.profile.runner import measure

    module, source = _load_standalone(ref, session_module)
    got = Collected(runner={"kind": "in-process", "session": source})

    def open_session(profile_dir: str | None = None) -> Any:
        if module is not None:
            return module.open_session(str(ref.path), threads=settings.threads, profile_dir=profile_dir)
        if profile_dir is None and ref.opened is not None and settings.threads is None:
            return ref.opened.session()
        raise DeviceError("no standalone session for this target: per-op profiling and --threads unavailable")

    if ref.kind == "artifact" and module is None:
        raise DeviceError(f"{ref.path} is an artifact folder whose target has no standalone session; bundle it first")
    try:
        measure(open_session, runner_settings(ref, settings), lambda e: got.add(e, on_event),
                vocab_size=_vocab(ref.manifest))
    except DeviceError as e:
        got.error = e
    except TimeoutError as e:   # the runner's own deadline: the only timeout an in-process run has
        runs = len([x for x in got.events if x.get("event") == "run"])
        got.error = CommandTimeout(f"local: {e} — {runs} measurement(s) finished before that are kept in the report")
    return got


def _load_standalone(ref: BundleRef, override: str | None) -> tuple[Any, str]:
    """(module or None, what it is: 'session module <path>' / 'bundle <file> (sha256-checked)' / 'target <path>' /
    'target Session')."""
    try:
        path = standalone_module(ref, override)
    except DeviceError:
        return None, "target Session"
    shipped = None if override else shipped_session(ref)
    source = (f"session module {path}" if override else f"bundle {shipped} (sha256-checked)" if shipped
              else f"target {path}")
    return load_session_module(ref, override), source


def _vocab(manifest: dict[str, Any]) -> int | None:
    return (manifest.get("model") or {}).get("vocab_size") or (manifest.get("metadata") or {}).get("vocab_size")


def check_storage(device: Device, workdir: str, needed: int, timeout: float) -> dict[str, Any]:
    free = device.free_bytes(workdir, timeout=min(timeout, 60))
    want = int(needed * STORAGE_MARGIN) + STORAGE_SLACK_BYTES
    if free is not None and free < want:
        raise DeviceError(f"{device.uri}: not enough free storage in {workdir}: {free / 1e6:.1f} MB free, "
                          f"{want / 1e6:.1f} MB needed (bundle + runner + 10 %); nothing was pushed. Free some space "
                          "or choose another workdir")
    return {"workdir": workdir, "free_bytes": free, "needed_bytes": want}


def run_remote(device: Device, ref: BundleRef, settings: Settings, runner: str | None, python: str | None,
               session_module: str | None, on_event: EventFn | None, keep: bool = False) -> Collected:
    """Push bundle + runner to the device's workdir, run there, stream events back, pull the events file."""
    timeout = settings.timeout_s
    runner_path = Path(runner).expanduser() if runner else None
    if runner_path is not None and runner_path.suffix != ".py":
        from edgekit.profile.llama_main import run_llama_main

        return run_llama_main(device, ref, settings, runner_path, on_event)
    if device.kind == "adb" and runner_path is None:
        raise DeviceError(f"{device.uri}: Android phones need a runner: the path of your build of ExecuTorch's "
                          "llama_main (--runner PATH, or runner = \"...\" for this device in devices.toml); we cannot "
                          "build Android binaries here. Our Python runner (edgekit/profile/runner.py) also works "
                          "where the phone has python with numpy and the runtime (give python=).")
    module = standalone_module(ref, session_module)
    root = f"{device.workdir().rstrip('/')}/edgekit-profile-{uuid.uuid4().hex[:10]}"
    got = Collected(runner={"kind": "edgekit-runner", "session_module": module.name, "remote_dir": root})
    needed = ref.bytes() + RUNNER_FILE.stat().st_size + module.stat().st_size + SPECULATE_FILE.stat().st_size
    got.runner["storage"] = check_storage(device, device.workdir(), needed, timeout)
    with tempfile.TemporaryDirectory(prefix="edgekit-runner-") as tmp:
        stage = Path(tmp) / "runner"
        stage.mkdir()
        shutil.copy2(runner_path or RUNNER_FILE, stage / "edgekit_runner.py")
        shutil.copy2(module, stage / "standalone_session.py")
        shutil.copy2(SPECULATE_FILE, stage / "edgekit_speculate.py")
        # a file, not the command line: the prompts' token ids would pass what a phone's shell takes in one line
        (stage / "settings.json").write_text(json.dumps(runner_settings(ref, settings)))
        try:
            device.run(["mkdir", "-p", root], timeout=min(timeout, 60)).check(f"{device.uri}: mkdir {root}")
            device.push(stage, f"{root}/runner", timeout)
            device.push(ref.path, f"{root}/bundle", timeout)
            _run_runner(device, root, settings, python or device.options.get("python") or "python3", got, on_event)
            if got.error is None:
                _pull_events(device, root, got, Path(tmp), timeout)
        except DeviceError as e:
            got.error = e
        finally:
            if not keep:
                _cleanup(device, root)
    return got


def _run_runner(device: Device, root: str, settings: Settings, python: str, got: Collected,
                on_event: EventFn | None) -> None:
    pidfile = f"{root}/runner.pid"
    # the device's shell records the runner's pid, so a timed-out runner can be stopped there too
    argv = ["sh", "-c", 'echo $$ > "$1"; shift; exec "$@"', "sh", pidfile,
            python, f"{root}/runner/edgekit_runner.py", "--folder", f"{root}/bundle",
            "--settings", f"@{root}/runner/settings.json", "--out", f"{root}/events.jsonl"]

    def line(text: str) -> None:
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                return
            if event.get("event") == "start":
                got.runner["remote_facts"] = event.get("facts", {})
            got.add(event, on_event)
        elif text.strip():
            log.debug("%s runner: %s", device.uri, text)

    try:
        res = device.run(argv, timeout=settings.timeout_s, on_line=line)
    except DeviceError as e:
        if isinstance(e, CommandTimeout):
            _stop_remote(device, pidfile)
        got.error = type(e)(f"{e} — {len([x for x in got.events if x.get('event') == 'run'])} measurement(s) "
                            "received before that are kept in the report")
        return
    errors = [e["error"] for e in got.events if e.get("event") == "error"]
    if res.returncode != 0 or errors:
        detail = errors[0] if errors else (res.stderr or res.stdout).strip()[-500:]
        got.error = DeviceError(f"{device.uri}: the runner failed (exit {res.returncode}): {detail}")


def _stop_remote(device: Device, pidfile: str) -> None:
    try:
        device.run(["sh", "-c", 'kill "$(cat "$1")"', "sh", pidfile], timeout=30)
    except DeviceError as e:
        log.warning("%s: could not stop the timed-out runner: %s", device.uri, e)


def _pull_events(device: Device, root: str, got: Collected, tmp: Path, timeout: float) -> None:
    """The events file written on the device is the record; stdout was the live view of it."""
    local = tmp / "events.jsonl"
    device.pull(f"{root}/events.jsonl", local, timeout)
    pulled = [json.loads(ln) for ln in local.read_text().splitlines() if ln.strip()]
    if len(pulled) >= len(got.events):
        got.events = pulled
    got.runner["events_pulled"] = len(pulled)


def _cleanup(device: Device, root: str) -> None:
    try:
        device.remove(root, timeout=60)
    except DeviceError as e:  # the device may be gone: nothing more to do
        log.warning("%s: could not remove %s: %s", device.uri, root, e)
