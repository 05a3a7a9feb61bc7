"""Markdown rendering of one or several profile reports (a summary table, then per-report details)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.profiling.report import ProfileReport


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def mb(v: Any) -> str:
    return "–" if v is None else f"{v / 1e6:,.0f} MB"


def med(section: dict[str, Any] | None, key: str = "median") -> float | None:
    return (section or {}).get(key)


def summary_rows(reports: list[ProfileReport]) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table shared by Markdown and HTML."""
    lengths = sorted({row["prompt_length"] for r in reports for row in r.results.get("prompt_lengths", [])})
    head = ["run", "device", "target", "quant", "load ms", "TTFT ms"] + [f"prefill tok/s @{n}" for n in lengths] + \
        ["decode tok/s (p10–p90)", "peak RSS", "status"]
    rows = []
    for r in reports:
        res = r.results
        by_len = {row["prompt_length"]: row for row in res.get("prompt_lengths", [])}
        dec = res.get("decode_tokens_per_s") or {}
        decode = f"{fmt(dec.get('median'))} ({fmt(dec.get('p10'))}–{fmt(dec.get('p90'))})" if dec else "–"
        status = "complete" if r.complete else f"partial: {r.data.get('error') or 'incomplete'}"
        if r.regressions:
            status += f"; {len(r.regressions)} regression(s)"
        rows.append([r.bundle.get("name", "?"), r.device.get("name") or r.device["uri"], r.bundle.get("target", "?"),
                     str(r.bundle.get("quant") or "–"), fmt(res.get("load_ms")), fmt(med(res.get("ttft_ms")))]
                    + [fmt(med((by_len.get(n) or {}).get("prefill_tokens_per_s"))) for n in lengths]
                    + [decode, mb(res.get("peak_rss_bytes")), status])
    return head, rows


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in esc]


def _details(r: ProfileReport) -> list[str]:
    res, f = r.results, r.device.get("facts", {})
    out = [f"## {r.label}", "",
           (f"- device: `{r.device['uri']}` — {f.get('os', '?')}, {f.get('soc') or f.get('cpu') or '?'}, "
           f"{f.get('cores', '?')} cores, RAM {mb(f.get('ram_bytes'))}"),
           f"- bundle: `{r.bundle.get('path')}` (manifest sha256 `{r.bundle.get('manifest_sha256', '')[:16]}…`)",
           "- settings: " + ", ".join(f"{k}={v}" for k, v in r.settings.items()),
           (f"- runner: {r.data.get('runner', {}).get('kind', '?')}; warm-up runs excluded: "
           f"{res.get('warmup_runs_excluded', 0)}"), ""]
    if r.data.get("error"):
        out += [f"**Incomplete run:** {r.data['error']}", ""]
    head = ["prompt", "runs", "prefill ms", "prefill tok/s (p10–p90)", "TTFT ms", "decode tok/s (p10–p90)",
            "decode ms/token"]
    rows = []
    for row in res.get("prompt_lengths", []):
        p, d = row.get("prefill_tokens_per_s") or {}, row.get("decode_tokens_per_s") or {}
        rows.append([str(row["prompt_length"]), str(row["runs"]), fmt(med(row.get("prefill_ms"))),
                     f"{fmt(p.get('median'))} ({fmt(p.get('p10'))}–{fmt(p.get('p90'))})",
                     fmt(med(row.get("ttft_ms"))), f"{fmt(d.get('median'))} ({fmt(d.get('p10'))}–{fmt(d.get('p90'))})",
                     fmt(med(row.get("decode_ms_per_token")), 2)])
    out += _table(head, rows) + [""]
    for s in res.get("skipped", []):
        out.append(f"- skipped prompt length {s['prompt_length']}: {s['reason']}")
    ops = res.get("op_profile") or {}
    if ops.get("ops"):
        out += ["", f"### Top {len(ops['ops'])} ops ({ops.get('scope', '')})", ""]
        total = ops.get("total_ms") or sum(o["total_ms"] for o in ops["ops"]) or 1.0
        out += _table(["op", "type", "calls", "total ms", "share"],
                      [[o["name"], o["op_type"], str(o["calls"]), fmt(o["total_ms"], 2),
                        f"{100 * o['total_ms'] / total:.1f} %"] for o in ops["ops"]])
    else:
        out.append(f"- per-op profile: not available ({ops.get('reason', 'not measured')})")
    out += _speculation_lines(res.get("speculation") or {})
    if r.data.get("regressions") is not None:
        out += ["", "### Compared with the last run", ""] + _regression_lines(r)
    return out + [""]


def _speculation_lines(spec: dict) -> list[str]:
    if not spec.get("available"):
        return [f"- speculative decoding: not measured ({spec.get('reason', 'not measured')})"]
    out = ["", "### Speculative decoding (prompt-lookup drafts; the shipped prompts, greedy)", ""]
    rows = [[p["kind"], p["prompt"], str(p["tokens"]), fmt(p.get("plain_decode_tok_s")), fmt(p.get("decode_tok_s")),
             f"{p['speedup']:.2f}x" if p.get("speedup") else "-", fmt(p.get("tokens_per_forward"), 2),
             "-" if p.get("acceptance_rate") is None else f"{p['acceptance_rate']:.0%}",
             "yes" if p.get("same_as_plain") else "no"] for p in spec["prompts"]]
    rows += [[f"**{kind}**", "geometric mean", "", "", "",
              f"**{s['speedup_geomean']:.2f}x**" if s.get("speedup_geomean") else "-", "", "",
              f"{s['same_as_plain']}/{s['prompts']}"] for kind, s in spec.get("sets", {}).items()]
    return out + _table(["set", "prompt", "tokens", "plain tok/s", "speculative tok/s", "speed-up", "tokens/forward",
                         "drafts kept", "same as plain"], rows)


def _regression_lines(r: ProfileReport) -> list[str]:
    reg = r.data["regressions"]
    if reg.get("compared_with") is None:
        return [f"- {reg.get('note', 'no earlier run')}"]
    if not reg["found"]:
        return [f"- no regression beyond {reg['threshold']:.0%} vs run #{reg['compared_with']['history_id']}"]
    return [f"- **REGRESSION** {g['metric']}: {fmt(g['previous'], 2)} → {fmt(g['current'], 2)} "
            f"({g['change']:+.1%}, threshold {g['threshold']:.0%})" for g in reg["found"]]


def render_markdown(reports: list[ProfileReport]) -> str:
    head, rows = summary_rows(reports)
    out = ["# edgekit profile", ""] + _table(head, rows) + [""]
    for r in reports:
        out += _details(r)
    return "\n".join(out)
