"""A self-contained HTML page for one or several profile reports: inline CSS and inline SVG charts, no scripts,
no network. Several reports (devices or bundles) are drawn side by side in the same charts."""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from edgekit.profiling import svg
from edgekit.profiling.markdown import fmt, mb, summary_rows

if TYPE_CHECKING:
    from edgekit.profiling.report import ProfileReport

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #111827; background: #f9fafb; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; } h3 { font-size: 14px; }
.sub { color: #6b7280; font-size: 13px; margin-bottom: 16px; }
table { border-collapse: collapse; background: #fff; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #e5e7eb; padding: 4px 8px; text-align: right; }
th { background: #f3f4f6; } td:first-child, th:first-child, td.l { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px; }
.bad { color: #b91c1c; font-weight: 600; } .ok { color: #15803d; }
.facts td { text-align: left; }
"""


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _labels(reports: list[ProfileReport]) -> list[str]:
    labels = [r.label for r in reports]
    if len(set(labels)) < len(labels):  # same bundle and device twice (e.g. before/after): add the date
        labels = [f"{lab} ({r.data.get('created', '')[:16]})" for lab, r in zip(labels, reports)]
    return labels


def charts(reports: list[ProfileReport]) -> list[str]:
    labels = _labels(reports)
    lengths = sorted({row["prompt_length"] for r in reports for row in r.results.get("prompt_lengths", [])})
    by_len = [{row["prompt_length"]: row for row in r.results.get("prompt_lengths", [])} for r in reports]

    def metric(i: int, n: int, key: str, stat: str = "median") -> float | None:
        return ((by_len[i].get(n) or {}).get(key) or {}).get(stat)

    cats = [str(n) for n in lengths]
    prefill = svg.grouped_bars(
        "Prefill tokens/s by prompt length", cats,
        [(labels[i], [metric(i, n, "prefill_tokens_per_s") for n in lengths]) for i in range(len(reports))],
        "tokens/s", errors=[[_band(by_len[i].get(n), "prefill_tokens_per_s") for n in lengths]
                            for i in range(len(reports))])
    decode = svg.grouped_bars(
        "Decode tokens/s by prompt length (bars: median, whiskers: p10–p90)", cats,
        [(labels[i], [metric(i, n, "decode_tokens_per_s") for n in lengths]) for i in range(len(reports))],
        "tokens/s", errors=[[_band(by_len[i].get(n), "decode_tokens_per_s") for n in lengths]
                            for i in range(len(reports))])
    ttft = svg.grouped_bars(
        "Time to first token by prompt length", cats,
        [(labels[i], [metric(i, n, "ttft_ms") for n in lengths]) for i in range(len(reports))], "ms")
    latencies = svg.histogram(
        "Decode latency distribution (per token, all prompt lengths)",
        [(labels[i], [ms for row in r.results.get("prompt_lengths", []) for ms in row.get("decode_latencies_ms", [])])
         for i, r in enumerate(reports)], "ms per token")
    out = [prefill, decode, ttft, latencies]
    for i, r in enumerate(reports):
        spec = r.results.get("speculation") or {}
        if spec.get("available"):
            prompts = spec["prompts"]
            out.append(svg.grouped_bars(
                f"Decode with and without speculation: {labels[i]}", [p["prompt"] for p in prompts],
                [("plain", [p.get("plain_decode_tok_s") for p in prompts]),
                 ("speculative", [p.get("decode_tok_s") for p in prompts])], "tokens/s",
                width=max(580, 80 * len(prompts))))   # room for each prompt's name under its bars
    for i, r in enumerate(reports):
        ops = (r.results.get("op_profile") or {}).get("ops") or []
        if ops:
            out.append(svg.horizontal_bars(f"Per-op time, top {len(ops)}: {labels[i]}",
                                           [(f"{o['op_type']} {o['name']}".strip(), o["total_ms"]) for o in ops],
                                           "total ms", series_index=i))
    return out


def _band(row: dict[str, Any] | None, key: str) -> tuple[float, float] | None:
    s = (row or {}).get(key) or {}
    return (s["p10"], s["p90"]) if "p10" in s and "p90" in s else None


def _device_section(r: ProfileReport, label: str) -> str:
    f = dict(r.device.get("facts", {}))
    runtimes = f.pop("runtimes", None) or {}
    f.pop("runner_facts", None)
    rows = [[k, mb(v) if k.endswith("bytes") else str(v)] for k, v in f.items()]
    rows += [[f"runtime: {k}", str(v)] for k, v in runtimes.items() if v]
    settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
    status = (f'<p class="bad">Incomplete run: {escape(r.data.get("error") or "")}</p>' if not r.complete else "")
    regress = ""
    if r.data.get("regressions") is not None:
        found = r.regressions
        regress = ('<p class="bad">Regressions vs the last run: ' + "; ".join(
            f"{escape(g['metric'])} {fmt(g['previous'], 2)} → {fmt(g['current'], 2)} ({g['change']:+.1%})"
            for g in found) + "</p>") if found else '<p class="ok">No regression vs the last comparable run.</p>'
    ops = r.results.get("op_profile") or {}
    op_note = "" if ops.get("ops") else f"<p>Per-op profile not available: {escape(str(ops.get('reason', '')))}</p>"
    return (f"<h2>{escape(label)}</h2>{status}{regress}"
            f'<div class="sub">device <code>{escape(r.device["uri"])}</code> · bundle manifest sha256 '
            f'<code>{escape(r.bundle.get("manifest_sha256", "")[:16])}…</code> · {escape(settings)}</div>'
            + _table(["fact", "value"], rows, "facts") + op_note)


def quality_section(reports: list[ProfileReport], labels: list[str]) -> str:
    """Each bundle's quality on edgekit's shipped text (from its manifest) beside its decode speed."""
    rows = []
    for r, lab in zip(reports, labels):
        q = r.bundle.get("quality") or {}
        dec = (r.results.get("decode_tokens_per_s") or {}).get("median")
        if not q:
            rows.append([lab, str(r.bundle.get("quant") or "–"), "not measured", "–", "–", "–", "–", fmt(dec)])
            continue
        rows.append([lab, str(r.bundle.get("quant") or "–"), f"{q['mean_kl']:.4g}", f"{q['same_top']:.1%}",
                     fmt(q.get("perplexity"), 2), fmt(q.get("reference_perplexity"), 2),
                     f"{q.get('tokens')} of {q.get('text_id')}", fmt(dec)])
    return ("<h2>Quality beside speed</h2><div class=\"sub\">mean KL per token against the unquantized model "
            "(eager fp32), share of tokens with the same top choice, perplexities, measured in the bundle's own "
            "runtime when it was exported</div>"
            + _table(["run", "quant", "mean KL", "same top token", "perplexity", "fp32 perplexity", "tokens",
                      "decode tok/s"], rows, "quality"))


def speculation_section(reports: list[ProfileReport], labels: list[str]) -> str:
    """Per run and shipped prompt: decode tok/s without and with speculative decoding, as measured on the device."""
    rows = []
    for r, lab in zip(reports, labels):
        spec = r.results.get("speculation") or {}
        if not spec.get("available"):
            rows.append([lab, "–", "–", "–", "–", "–", "–", f"not measured: {spec.get('reason', 'not measured')}"])
            continue
        for p in spec["prompts"]:
            rows.append([lab, f"{p['kind']}: {p['prompt']}", fmt(p.get("plain_decode_tok_s")),
                         fmt(p.get("decode_tok_s")), f"{p['speedup']:.2f}x" if p.get("speedup") else "–",
                         fmt(p.get("tokens_per_forward"), 2),
                         "–" if p.get("acceptance_rate") is None else f"{p['acceptance_rate']:.0%}",
                         "same as plain greedy" if p.get("same_as_plain") else "differs from plain greedy"])
        for kind, s in spec.get("sets", {}).items():
            rows.append([lab, f"{kind}: geometric mean", "", "",
                         f"{s['speedup_geomean']:.2f}x" if s.get("speedup_geomean") else "–", "", "",
                         f"{s['same_as_plain']} of {s['prompts']} as plain greedy"])
    return ("<h2>Speculative decoding</h2><div class=\"sub\">prompt-lookup drafts verified in one forward; the "
            "prompts shipped with edgekit (input-grounded and open-ended), greedy, the two modes back to back</div>"
            + _table(["run", "prompt", "plain tok/s", "speculative tok/s", "speed-up", "tokens/forward",
                      "drafts kept", "output"], rows, "speculation"))


def render_html(reports: list[ProfileReport], title: str = "edgekit profile") -> str:
    head, rows = summary_rows(reports)
    labels = _labels(reports)
    parts = [(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{CSS}</style></head><body>"),
             (f"<h1>{escape(title)}</h1><div class=\"sub\">{len(reports)} run(s) · generated by edgekit "
             f"{escape(str(reports[0].data.get('edgekit_version', '')))} · all times wall-clock on the device, "
             "warm-up runs excluded</div>"),
             "<h2>Summary</h2>", _table(head, rows, "summary"), quality_section(reports, labels),
             speculation_section(reports, labels),
             "<h2>Charts</h2><div class=\"charts\">"]
    parts += [f'<div class="card">{c}</div>' for c in charts(reports)]
    parts.append("</div>")
    parts += [_device_section(r, lab) for r, lab in zip(reports, labels)]
    parts.append("</body></html>")
    return "\n".join(parts)
