"""The HTML report in headless Chromium (Debian `chromium`): screenshot not blank, charts and table in the DOM."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import TOY_SESSION, make_toy_bundle, png_pixels

from edgekit import profiling
from edgekit.profiling.html import render_html

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is needed: apt-get install chromium"
    with tempfile.TemporaryDirectory(prefix="ek-chromium-") as profile_dir:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture
def page(local_reports, tmp_path) -> Path:
    """Side by side: the real Android and IoT bundles on this host, plus a run cut short (partial)."""
    bundle = make_toy_bundle(tmp_path / "toy", delay_ms=20)
    seen = []

    def stop_after_two(e):
        if e.get("event") == "run":
            seen.append(e)
            if len(seen) == 2:
                raise profiling.DeviceError("stand-in failure: device gone")

    with pytest.raises(profiling.ProfileInterrupted) as err:
        profiling.profile(bundle, "local", prompt_lengths=(8, 16), decode_tokens=5, runs=2, warmup=0,
                          session_module=TOY_SESSION, on_event=stop_after_two)
    reports = [local_reports[k] for k in ("android", "iot") if k in local_reports] + [err.value.report]
    out = tmp_path / "report page.html"
    out.write_text(render_html(reports))
    return out


def test_html_is_self_contained(page):
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and " src=" not in html
    urls = set(re.findall(r"https?://[^\"' )]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls            # only the SVG namespace, never fetched


def test_html_renders_in_headless_chromium(page, tmp_path):
    shot = tmp_path / "shot.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1280, 2000)
    lum = [(r[i] * 299 + r[i + 1] * 587 + r[i + 2] * 114) // 1000 for r in rows[::8] for i in range(0, len(r), 24)]
    mean = sum(lum) / len(lum)
    variance = sum((v - mean) ** 2 for v in lum) / len(lum)
    dark = sum(v < 200 for v in lum) / len(lum)
    colours = {r[i:i + 3] for r in rows[::8] for i in range(0, len(r), 24)}
    assert variance > 100 and dark > 0.01, (variance, dark)        # not a blank or single-colour page
    assert len(colours) > 20                                       # bars in several series colours, text, grid

    dom = chromium("--dump-dom", page.as_uri()).stdout
    assert dom.count("<svg") >= 6           # prefill, decode, TTFT, latency histogram, per-op x2
    for title in ("Prefill tokens/s by prompt length", "Decode latency distribution", "Per-op time"):
        assert title in dom
    assert dom.count('class="bar"') > 20
    table = re.search(r'<table class="summary">(.*?)</table>', dom, re.DOTALL)
    assert table and table.group(1).count("<tr>") == 1 + 3         # header + the three runs
    assert "executorch" in table.group(1) and "onnx" in table.group(1) and "partial" in table.group(1)

