"""Turn the runner's events into the `results` section of a profile report (docs/profile-schema.md)."""
from __future__ import annotations

from typing import Any

import numpy as np


def spread(values: list[float]) -> dict[str, float] | None:
    """median, p10, p90, mean, min, max of `values` (None when empty)."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def _per_length(length: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    prefill = [r["prefill_ms"] for r in runs]
    decode_ms = [ms for r in runs for ms in r["decode_ms"]]
    decode_rates = [1000.0 / ms for ms in decode_ms if ms > 0]
    return {
        "prompt_length": length,
        "runs": len(runs),
        "prefill_ms": spread(prefill),
        "prefill_tokens_per_s": spread([length * 1000.0 / ms for ms in prefill if ms > 0]),
        "ttft_ms": spread([r["ttft_ms"] for r in runs]),
        "decode_tokens": len(runs[0]["decode_ms"]) if runs else 0,
        "decode_ms_per_token": spread(decode_ms),
        "decode_tokens_per_s": spread(decode_rates),
        "decode_latencies_ms": [round(ms, 4) for ms in decode_ms],
    }


def aggregate(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics over the timed (non-warm-up) runs; warm-ups are only counted."""
    load = next((e for e in events if e.get("event") == "load"), None)
    timed: dict[int, list[dict]] = {}
    warmups = 0
    peak = None
    for e in events:
        if e.get("peak_rss_bytes"):
            peak = max(peak or 0, int(e["peak_rss_bytes"]))
        if e.get("event") != "run":
            continue
        if e.get("warmup"):
            warmups += 1
            continue
        timed.setdefault(int(e["prompt_length"]), []).append(e)
    lengths = [_per_length(length, runs) for length, runs in sorted(timed.items())]
    all_decode = [ms for runs in timed.values() for r in runs for ms in r["decode_ms"]]
    ops = next((e for e in events if e.get("event") == "op_profile"), None)
    bandwidth = next((e for e in events if e.get("event") == "bandwidth"), None)
    return {
        "read_bandwidth_gbs": bandwidth["read_gbs"] if bandwidth else None,
        "load_ms": load["load_ms"] if load else None,
        "max_seq_len": load.get("max_seq_len") if load else None,
        "rss_before_load_bytes": load.get("rss_before_load_bytes") if load else None,
        "rss_after_load_bytes": load.get("rss_after_load_bytes") if load else None,
        "peak_rss_bytes": peak,
        "ttft_ms": lengths[0]["ttft_ms"] if lengths else None,
        "decode_tokens_per_s": spread([1000.0 / ms for ms in all_decode if ms > 0]),
        "decode_ms_per_token": spread(all_decode),
        "warmup_runs_excluded": warmups,
        "prompt_lengths": lengths,
        "skipped": [{"prompt_length": e["prompt_length"], "reason": e["reason"]}
                    for e in events if e.get("event") == "skip"],
        "op_profile": _op_section(ops),
        "speculation": speculation_section(events),
    }


def speculation_section(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shipped prompt: decode tok/s without and with speculation (back to back on the device), tokens per
    forward, drafts kept; per set, the geometric mean of the speed-ups."""
    seen = [e for e in events if e.get("event") == "speculation"]
    rows = [{k: v for k, v in e.items() if k not in ("event", "available")} for e in seen if e.get("available")]
    if not rows:
        off = next((e for e in seen if not e.get("available")), None)
        return {"available": False, "reason": off["reason"] if off else "not measured", "prompts": []}
    for r in rows:
        plain, fast = r.get("plain_decode_tok_s"), r.get("decode_tok_s")
        r["speedup"] = fast / plain if plain and fast else None
    sets = {}
    for kind in sorted({r["kind"] for r in rows}):
        ups = [r["speedup"] for r in rows if r["kind"] == kind and r["speedup"]]
        sets[kind] = {"prompts": len(ups), "speedup_geomean": float(np.exp(np.mean(np.log(ups)))) if ups else None,
                      "same_as_plain": sum(bool(r.get("same_as_plain")) for r in rows if r["kind"] == kind)}
    return {"available": True, "prompts": rows, "sets": sets}


def _op_section(ops: dict[str, Any] | None) -> dict[str, Any]:
    if ops is None:
        return {"available": False, "reason": "not measured", "ops": []}
    return {k: v for k, v in ops.items() if k != "event"} | {"ops": ops.get("ops", [])}


def headline(results: dict[str, Any]) -> dict[str, float | None]:
    """The few numbers regressions are checked on: name -> value, and which direction is better."""
    out: dict[str, float | None] = {
        "load_ms": results.get("load_ms"),
        "ttft_ms": (results.get("ttft_ms") or {}).get("median"),
        "decode_tokens_per_s": (results.get("decode_tokens_per_s") or {}).get("median"),
        "peak_rss_bytes": results.get("peak_rss_bytes"),
    }
    for row in results.get("prompt_lengths", []):
        out[f"prefill_tokens_per_s@{row['prompt_length']}"] = (row.get("prefill_tokens_per_s") or {}).get("median")
    for kind, figures in ((results.get("speculation") or {}).get("sets") or {}).items():
        out[f"speculation_speedup@{kind}"] = figures.get("speedup_geomean")
    return out


HIGHER_IS_BETTER = ("decode_tokens_per_s", "prefill_tokens_per_s", "speculation_speedup")


def compare(current: dict[str, Any], previous: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
    """Metrics of `current` worse than `previous` by more than `threshold` (0.10 = 10 %)."""
    now, before = headline(current), headline(previous)
    found = []
    for name, value in now.items():
        old = before.get(name)
        if value is None or old is None or old == 0:
            continue
        higher_better = name.startswith(HIGHER_IS_BETTER)
        change = (value - old) / abs(old)
        worse = -change if higher_better else change
        if worse > threshold:
            found.append({"metric": name, "previous": old, "current": value, "change": change,
                          "threshold": threshold})
    return found
