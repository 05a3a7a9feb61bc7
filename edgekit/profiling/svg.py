"""Small inline-SVG charts generated in Python (no JavaScript, no network): grouped bars, error bars, histograms,
horizontal bars. Every chart is an <svg> element with a <title> and text labels, readable without CSS."""
from __future__ import annotations

import math
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_max(v: float) -> float:
    """A round axis maximum >= v (1, 2, 2.5, 5 x 10^k)."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
            f'<text x="{width / 2}" y="16" text-anchor="middle" {FONT} font-weight="bold">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def _y_axis(x0: int, y0: int, y1: int, top: float, label: str, width: int) -> list[str]:
    out = [(f'<text x="12" y="{(y0 + y1) / 2}" {FONT} transform="rotate(-90 12 {(y0 + y1) / 2})" '
           f'text-anchor="middle">{escape(label)}</text>')]
    for i in range(5):
        v = top * i / 4
        y = y0 - (y0 - y1) * i / 4
        out.append(f'<line x1="{x0}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{_fmt(v)}</text>')
    return out


def _legend(labels: list[str], x: int, y: int) -> list[str]:
    out = []
    for i, lab in enumerate(labels):
        yy = y + 14 * i
        out.append(f'<rect x="{x}" y="{yy - 9}" width="10" height="10" fill="{color(i)}"/>')
        out.append(f'<text x="{x + 14}" y="{yy}" {FONT}>{escape(lab)}</text>')
    return out


def grouped_bars(title: str, categories: list[str], series: list[tuple[str, list[float | None]]], ylabel: str,
                 errors: list[list[tuple[float, float] | None]] | None = None, width: int = 580) -> str:
    """One group of bars per category, one bar per series; optional (low, high) whiskers per bar."""
    legend_h = 14 * len(series) + 6
    height = 250 + legend_h
    x0, y0, y1 = 60, 210, 30
    values = [v for _, vals in series for v in vals if v is not None]
    highs = [hi for errs in (errors or []) for e in errs if e for hi in (e[1],)]
    top = nice_max(max(values + highs, default=1.0))
    body = _y_axis(x0, y0, y1, top, ylabel, width)
    group_w = (width - 20 - x0) / max(len(categories), 1)
    bar_w = min(40.0, group_w * 0.8 / max(len(series), 1))
    for ci, cat in enumerate(categories):
        gx = x0 + group_w * ci + (group_w - bar_w * len(series)) / 2
        body.append(f'<text x="{x0 + group_w * (ci + 0.5):.1f}" y="{y0 + 16}" text-anchor="middle" {FONT}>'
                    f'{escape(cat)}</text>')
        for si, (label, vals) in enumerate(series):
            v = vals[ci] if ci < len(vals) else None
            if v is None:
                continue
            h = (y0 - y1) * v / top
            x = gx + si * bar_w
            body.append(f'<rect class="bar" x="{x:.1f}" y="{y0 - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                        f'fill="{color(si)}"><title>{escape(label)} @ {escape(cat)}: {_fmt(v)}</title></rect>')
            err = errors[si][ci] if errors and si < len(errors) and ci < len(errors[si]) else None
            if err:
                lo, hi = ((y0 - (y0 - y1) * e / top) for e in err)
                cx = x + (bar_w - 2) / 2
                body.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="#111827"/>')
            body.append(f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{y0 - h - 3:.1f}" text-anchor="middle" '
                        f'{FONT} font-size="9">{_fmt(v)}</text>')
    body.append(f'<line x1="{x0}" x2="{width - 20}" y1="{y0}" y2="{y0}" stroke="#374151"/>')
    body += _legend([s[0] for s in series], x0, y0 + 40)
    return _frame(width, height, title, body)


def histogram(title: str, series: list[tuple[str, list[float]]], xlabel: str, bins: int = 24,
              width: int = 580) -> str:
    """Overlaid step-free histograms (translucent bars) of each series on shared bins."""
    legend_h = 14 * len(series) + 6
    height = 250 + legend_h
    x0, y0, y1 = 60, 200, 30
    values = [v for _, vals in series for v in vals]
    if not values:
        return _frame(width, 60, title, [f'<text x="20" y="40" {FONT}>no decode measurements</text>'])
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.01, 1e-3)
    step = (hi - lo) / bins
    counts = []
    for _, vals in series:
        c = [0] * bins
        for v in vals:
            c[min(int((v - lo) / step), bins - 1)] += 1
        counts.append([n / max(len(vals), 1) for n in c])
    top = nice_max(max(max(c) for c in counts))
    body = _y_axis(x0, y0, y1, top, "share of tokens", width)
    bw = (width - 20 - x0) / bins
    for si, c in enumerate(counts):
        for b, share in enumerate(c):
            if share <= 0:
                continue
            h = (y0 - y1) * share / top
            body.append(f'<rect class="bar" x="{x0 + b * bw:.1f}" y="{y0 - h:.1f}" width="{bw - 1:.1f}" '
                        f'height="{h:.1f}" fill="{color(si)}" fill-opacity="0.55"><title>{escape(series[si][0])}: '
                        f'{_fmt(lo + b * step)}–{_fmt(lo + (b + 1) * step)}: {share:.1%}</title></rect>')
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        x = x0 + (width - 20 - x0) * i / 4
        body.append(f'<text x="{x:.1f}" y="{y0 + 14}" text-anchor="middle" {FONT}>{_fmt(v)}</text>')
    body.append(f'<text x="{(x0 + width) / 2}" y="{y0 + 30}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>')
    body.append(f'<line x1="{x0}" x2="{width - 20}" y1="{y0}" y2="{y0}" stroke="#374151"/>')
    body += _legend([s[0] for s in series], x0, y0 + 50)
    return _frame(width, height, title, body)


def horizontal_bars(title: str, items: list[tuple[str, float]], xlabel: str, width: int = 580,
                    series_index: int = 0) -> str:
    """One bar per item (e.g. per-op total ms), longest first."""
    if not items:
        return _frame(width, 60, title, [f'<text x="20" y="40" {FONT}>no per-op data</text>'])
    row, label_w, x0 = 16, 230, 240
    height = 50 + row * len(items) + 20
    top = nice_max(max(v for _, v in items))
    body = []
    for i, (name, v) in enumerate(items):
        y = 30 + i * row
        w = (width - 20 - x0) * v / top
        short = name if len(name) <= 38 else name[:36] + "…"
        body.append(f'<text x="{label_w}" y="{y + 11}" text-anchor="end" {FONT}>{escape(short)}</text>')
        body.append(f'<rect class="bar" x="{x0}" y="{y}" width="{w:.1f}" height="{row - 3}" '
                    f'fill="{color(series_index)}"><title>{escape(name)}: {_fmt(v)}</title></rect>')
        body.append(f'<text x="{x0 + w + 3:.1f}" y="{y + 11}" {FONT} font-size="9">{_fmt(v)}</text>')
    body.append(f'<text x="{(x0 + width) / 2}" y="{height - 6}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>')
    return _frame(width, height, title, body)
