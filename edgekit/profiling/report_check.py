"""The types a profile report must have for edgekit to read and render it (docs/profile-schema.md), so a
mistyped or hand-edited JSON file is refused with its bad keys named instead of failing deep in a renderer."""
from __future__ import annotations

from typing import Any

_NUM = (int, float)
SPREADS = ("ttft_ms", "decode_tokens_per_s", "decode_ms_per_token")
ROW_SPREADS = ("prefill_ms", "prefill_tokens_per_s", "ttft_ms", "decode_ms_per_token", "decode_tokens_per_s")
NUMBERS = ("load_ms", "max_seq_len", "rss_before_load_bytes", "rss_after_load_bytes", "peak_rss_bytes",
           "warmup_runs_excluded")


def _is(v: Any, types: tuple[type, ...], null: bool = True) -> bool:
    if v is None:
        return null
    return isinstance(v, types) and not (isinstance(v, bool) and bool not in types)


def _spread(where: str, v: Any, out: list[str]) -> None:
    if v is None:
        return
    if not isinstance(v, dict):
        out.append(f"{where} is {type(v).__name__}, expected a spread object or null")
    else:
        out.extend(f"{where}.{k} is {type(x).__name__}, expected a number" for k, x in v.items() if not _is(x, _NUM))


def _rows(rows: Any, out: list[str]) -> None:
    if not isinstance(rows, list):
        out.append(f"results.prompt_lengths is {type(rows).__name__}, expected a list")
        return
    for i, row in enumerate(rows):
        where = f"results.prompt_lengths[{i}]"
        if not isinstance(row, dict) or not _is(row.get("prompt_length"), (int,), null=False):
            out.append(f"{where} needs an integer prompt_length")
            continue
        for key in ROW_SPREADS:
            _spread(f"{where}.{key}", row.get(key), out)
        lat = row.get("decode_latencies_ms", [])
        if not isinstance(lat, list) or not all(_is(x, _NUM, null=False) for x in lat):
            out.append(f"{where}.decode_latencies_ms must be a list of numbers")


def problems(data: dict[str, Any]) -> list[str]:
    """Every type problem found (empty when the report is readable)."""
    out: list[str] = []
    if not _is(data["device"].get("uri"), (str,), null=False):
        out.append("device.uri must be a string")
    for key in ("facts",):
        if not isinstance(data["device"].get(key, {}), dict):
            out.append(f"device.{key} must be an object")
    for key in ("name", "target", "quant", "path", "manifest_sha256"):
        if not _is(data["bundle"].get(key), (str,)):
            out.append(f"bundle.{key} must be a string")
    if not _is(data.get("complete"), (bool,)) or not _is(data.get("error"), (str,)):
        out.append("complete must be true/false and error a string or null")
    res = data["results"]
    out.extend(f"results.{k} is {type(res[k]).__name__}, expected a number or null" for k in NUMBERS
               if k in res and not _is(res[k], _NUM))
    for key in SPREADS:
        _spread(f"results.{key}", res.get(key), out)
    _rows(res.get("prompt_lengths", []), out)
    ops = res.get("op_profile", {})
    if not isinstance(ops, dict) or not isinstance(ops.get("ops", []), list) \
            or not all(isinstance(o, dict) for o in ops.get("ops", [])):
        out.append("results.op_profile must be an object whose ops is a list of objects")
    reg = data.get("regressions")
    if reg is not None and (not isinstance(reg, dict) or not isinstance(reg.get("found", []), list)):
        out.append("regressions must be null or an object with a list 'found'")
    if not isinstance(data.get("runner", {}), dict):
        out.append("runner must be an object")
    return out
