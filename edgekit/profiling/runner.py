"""The measurement loop, and the self-contained runner edgekit pushes to devices.

This file imports ONLY the standard library and numpy: it is copied as `edgekit_runner.py` next to a target's
`standalone_session.py` onto boards that have neither edgekit nor torch. The host imports the same `measure()` for
`--device local`, so local and remote numbers come from one loop.

Output: one JSON object per line ("events"), flushed as soon as each measurement ends, so a run cut short still
leaves every finished measurement with the host.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

RUNNER_VERSION = 1
OP_TOP_N = 20
OP_PROFILE_DECODE_STEPS = 4


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss) if sys.platform == "darwin" else int(rss) * 1024
    except (ImportError, OSError):
        return None


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def read_bandwidth_gbs(threads: int = 2, nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """This device's memory read bandwidth in GB/s: the best of `repeats` reads of a buffer much larger than any
    cache, split over `threads` (numpy's reductions release the GIL). Decode reads every weight once per token, so
    this bounds it; `edgekit plan` uses the figure a profile recorded for a device."""
    from concurrent.futures import ThreadPoolExecutor

    buf = np.ones(nbytes // 8, dtype=np.int64)
    parts = np.array_split(buf, max(1, threads))
    best = float("inf")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(np.max, parts))
            best = min(best, time.perf_counter() - t0)
    return buf.nbytes / best / 1e9


def _last_logits(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits)[0, -1]


class Deadline:
    """The run's time limit, checked between forward calls (a call inside native code cannot be interrupted; a
    remote run is also stopped by the host's command timeout)."""

    def __init__(self, seconds: float | None):
        self.seconds = float(seconds) if seconds else None
        self.end = time.monotonic() + self.seconds if self.seconds else None

    def check(self) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise TimeoutError(f"the run exceeded its timeout of {self.seconds:g} s")


def one_run(session: Any, prompt: np.ndarray, decode_tokens: int, deadline: Deadline | None = None) -> dict[str, Any]:
    """Prefill `prompt` (int64[1, L]) then greedy-decode `decode_tokens` tokens; times in milliseconds."""
    deadline = deadline or Deadline(None)
    length = prompt.shape[1]
    session.reset()
    t0 = time.perf_counter()
    logits = session.forward(prompt, np.arange(length, dtype=np.int64))
    t1 = time.perf_counter()
    token = int(np.argmax(_last_logits(logits)))
    t2 = time.perf_counter()
    decode_ms = []
    for pos in range(length, length + decode_tokens):
        deadline.check()
        s = time.perf_counter()
        logits = session.forward(np.array([[token]], dtype=np.int64), np.array([pos], dtype=np.int64))
        token = int(np.argmax(_last_logits(logits)))
        decode_ms.append((time.perf_counter() - s) * 1000.0)
    return {"prefill_ms": (t1 - t0) * 1000.0, "ttft_ms": (t2 - t0) * 1000.0, "decode_ms": decode_ms}


def _op_profile(open_session: Callable[..., Any], prompt: np.ndarray, emit: Callable[[dict], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="edgekit-ops-") as d:
        try:
            session = open_session(profile_dir=d)
            if not hasattr(session, "op_profile"):
                emit({"event": "op_profile", "available": False, "reason": "the session has no op_profile()"})
                return
            one_run(session, prompt, OP_PROFILE_DECODE_STEPS)
            ops = list(session.op_profile() or [])
        except Exception as e:  # noqa: BLE001 - any runtime may refuse profiling; timings stay valid
            emit({"event": "op_profile", "available": False, "reason": f"{type(e).__name__}: {e}"})
            return
    ops.sort(key=lambda o: -float(o.get("total_ms", 0.0)))
    total = sum(float(o.get("total_ms", 0.0)) for o in ops)
    top = [{"name": str(o.get("name", "")), "op_type": str(o.get("op_type", "")), "calls": int(o.get("calls", 0)),
            "total_ms": float(o.get("total_ms", 0.0))} for o in ops[:OP_TOP_N]]
    emit({"event": "op_profile", "available": bool(ops), "total_ms": total, "ops_seen": len(ops), "ops": top,
          "scope": f"one prefill of {prompt.shape[1]} tokens + {OP_PROFILE_DECODE_STEPS} decode steps",
          **({} if ops else {"reason": "the runtime reported no ops"})})


def _speculate_module() -> Any:
    """edgekit's speculation loop: the copy pushed beside this file on a device (edgekit_speculate.py), else the
    installed package's (a run in the host's own process)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edgekit_speculate.py")
    if not os.path.exists(path):
        from edgekit.runtime import speculate
        return speculate
    if "edgekit_speculate" not in sys.modules:
        spec = importlib.util.spec_from_file_location("edgekit_speculate", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["edgekit_speculate"] = module   # its dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["edgekit_speculate"]


def greedy_reply(session: Any, prompt: list[int], max_new: int, stop_ids: set[int], mode: str) -> dict[str, Any]:
    """Greedy decode from `prompt` through the speculation loop (mode "off" = one token per forward)."""
    spec = _speculate_module()
    session.reset()
    logits = session.forward(np.asarray([prompt], dtype=np.int64), np.arange(len(prompt), dtype=np.int64))
    out: list[int] = []
    t0 = [0.0]

    def emit(tok: int) -> str:
        out.append(tok)
        if len(out) == 1:
            t0[0] = time.perf_counter()
        if tok in stop_ids:
            return "stop_token"
        return "max_new_tokens" if len(out) >= max_new else ""

    stats = spec.decode(session, int(np.argmax(_last_logits(logits))), len(prompt), lambda row: int(np.argmax(row)),
                        emit, room=lambda: max_new - len(out), history=prompt, mode=mode)
    seconds = time.perf_counter() - t0[0]
    return {"tokens": out, "decode_tok_s": (len(out) - 1) / seconds if seconds > 0 and len(out) > 1 else None,
            **stats.as_dict(max(len(out) - 1, 0))}


def _speculation(session: Any, settings: dict[str, Any], emit: Callable[[dict], None],
                 deadline: Deadline) -> None:
    """Each shipped prompt decoded plainly and with speculation, back to back (order alternating), on this device."""
    prompts = settings.get("speculation_prompts") or []
    if settings.get("speculate", "off") == "off" or not prompts:
        reason = "off (--speculate off)" if settings.get("speculate", "off") == "off" else \
            settings.get("speculation_unavailable") or "no prompts"
        emit({"event": "speculation", "available": False, "reason": reason})
        return
    why = _speculate_module().unavailable_reason(session, "ngram")
    if why:
        emit({"event": "speculation", "available": False, "reason": why})
        return
    stop_ids = {int(t) for t in settings.get("stop_ids") or []}
    max_new = int(settings.get("speculation_tokens", 128))
    for i, item in enumerate(prompts):
        deadline.check()
        ids = [int(t) for t in item["ids"]][: max(int(getattr(session, "max_seq_len", 0) or 0) - max_new - 1, 1)]
        runs = {}
        for mode in (("off", "ngram") if i % 2 == 0 else ("ngram", "off")):
            runs[mode] = greedy_reply(session, ids, max_new, stop_ids, mode)
        plain, fast = runs["off"], runs["ngram"]
        emit({"event": "speculation", "available": True, "prompt": item["id"], "kind": item["kind"],
              "prompt_tokens": len(ids), "tokens": len(fast["tokens"]), "plain_decode_tok_s": plain["decode_tok_s"],
              "decode_tok_s": fast["decode_tok_s"], "tokens_per_forward": fast["tokens_per_forward"],
              "acceptance_rate": fast["acceptance_rate"], "same_as_plain": plain["tokens"] == fast["tokens"]})


def measure(open_session: Callable[..., Any], settings: dict[str, Any], emit: Callable[[dict], None],
            vocab_size: int | None = None) -> None:
    """Load, then per prompt length: `warmup` untimed-for-stats runs and `runs` timed runs; then per-op profile.

    `open_session(profile_dir=None)` returns a session (reset/forward/max_seq_len). Warm-up runs are emitted with
    "warmup": true so the host can show them, but never enter the statistics."""
    deadline = Deadline(settings.get("timeout_s"))
    rss_before = current_rss_bytes()
    t0 = time.perf_counter()
    session = open_session(profile_dir=None)
    load_ms = (time.perf_counter() - t0) * 1000.0
    max_seq_len = int(getattr(session, "max_seq_len", 0) or 0)
    emit({"event": "load", "load_ms": load_ms, "max_seq_len": max_seq_len, "rss_before_load_bytes": rss_before,
          "rss_after_load_bytes": current_rss_bytes()})
    rng = np.random.default_rng(int(settings.get("seed", 0)))
    high = max(2, min(int(vocab_size or 1000), 1000))
    first_prompt = None
    for length in settings["prompt_lengths"]:
        decode = int(settings["decode_tokens"])
        if max_seq_len and length + decode > max_seq_len:
            emit({"event": "skip", "prompt_length": length,
                  "reason": f"prompt {length} + decode {decode} tokens exceed max_seq_len {max_seq_len}"})
            continue
        prompt = rng.integers(1, high, size=(1, length), dtype=np.int64)
        first_prompt = prompt if first_prompt is None else first_prompt
        total = int(settings["warmup"]) + int(settings["runs"])
        for i in range(total):
            deadline.check()
            result = one_run(session, prompt, decode, deadline)
            emit({"event": "run", "prompt_length": length, "index": i, "warmup": i < int(settings["warmup"]),
                  "peak_rss_bytes": peak_rss_bytes(), **result})
    _speculation(session, settings, emit, deadline)
    del session
    if settings.get("op_profile", True) and first_prompt is not None:
        _op_profile(open_session, first_prompt[:, :min(first_prompt.shape[1], 64)], emit)
    peak = peak_rss_bytes()   # before the probe's buffer: the peak is the model's
    if settings.get("bandwidth", True):
        threads = int(settings.get("threads") or os.cpu_count() or 2)
        emit({"event": "bandwidth", "read_gbs": read_bandwidth_gbs(threads), "threads": threads})
    emit({"event": "done", "peak_rss_bytes": peak})


def host_facts() -> dict[str, Any]:
    """What the runner can tell about the machine it runs on (the host side adds uname/cpuinfo facts)."""
    facts: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                             "numpy": np.__version__, "cpu_count": os.cpu_count()}
    for mod in ("onnxruntime", "executorch"):
        try:
            from importlib.metadata import version

            facts[mod] = version(mod)
        except Exception:  # noqa: BLE001 - not installed on this board
            facts[mod] = None
    return facts


def _find_vocab(folder: str) -> int | None:
    for name in ("manifest.json", "artifact.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path) as f:
                found = _search_key(json.load(f), "vocab_size")
            if found:
                return int(found)
    return None


def _search_key(doc: Any, key: str) -> Any:
    if isinstance(doc, dict):
        if key in doc and isinstance(doc[key], int):
            return doc[key]
        for v in doc.values():
            found = _search_key(v, key)
            if found:
                return found
    elif isinstance(doc, list):
        for v in doc:
            found = _search_key(v, key)
            if found:
                return found
    return None


def _load_module(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("standalone_session", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="edgekit device runner: measures one bundle, prints JSON lines")
    p.add_argument("--folder", required=True, help="bundle or artifact folder")
    p.add_argument("--session-module", default=None, help="standalone_session.py (default: next to this file)")
    p.add_argument("--settings", required=True,
                   help="JSON (or @FILE holding it): prompt_lengths, decode_tokens, runs, warmup, threads, ...")
    p.add_argument("--out", default=None, help="also append the events to this file")
    args = p.parse_args(argv)
    if args.settings.startswith("@"):
        with open(args.settings[1:]) as f:
            settings = json.load(f)
    else:
        settings = json.loads(args.settings)
    module_path = args.session_module or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "standalone_session.py")
    out = open(args.out, "a") if args.out else None  # noqa: SIM115 - closed in the finally below

    def emit(event: dict) -> None:
        line = json.dumps(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if out:
            out.write(line + "\n")
            out.flush()

    emit({"event": "start", "runner_version": RUNNER_VERSION, "facts": host_facts()})
    try:
        module = _load_module(module_path)
        threads = settings.get("threads")

        def open_session(profile_dir: str | None = None) -> Any:
            return module.open_session(args.folder, threads=threads, profile_dir=profile_dir)

        measure(open_session, settings, emit, vocab_size=_find_vocab(args.folder))
    except Exception as e:  # noqa: BLE001 - reported to the host as an event
        emit({"event": "error", "error": f"{type(e).__name__}: {e}"})
        return 1
    finally:
        if out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
