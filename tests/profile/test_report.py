"""Reports: JSON round trip against docs/profile-schema.md, Markdown, history and --compare-last, the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TOY_SESSION, make_toy_bundle

import edgekit.profile as profiling
from edgekit.cli import cli
from edgekit.errors import EdgekitError
from edgekit.profile.history import History

SCHEMA_DOC = Path(__file__).parents[2] / "docs" / "profile-schema.md"
TOY = {"prompt_lengths": (8, 16), "decode_tokens": 6, "runs": 3, "warmup": 1, "session_module": TOY_SESSION}


def documented_keys() -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", SCHEMA_DOC.read_text(), re.MULTILINE)


def _has(doc, dotted: str) -> bool:
    cur = [doc]
    for part in dotted.split("."):
        key, is_list = (part[:-2], True) if part.endswith("[]") else (part, False)
        nxt = []
        for c in cur:
            if not isinstance(c, dict) or key not in c:
                return False
            nxt.extend(c[key] if is_list else [c[key]])
        cur = nxt
    return True


def test_json_report_matches_the_documented_schema(tmp_path):
    report = profiling.profile(make_toy_bundle(tmp_path / "toy"), "local", **TOY)
    path = report.write_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    keys = documented_keys()
    assert len(keys) > 50
    missing = [k for k in keys if not _has(data, k)]
    assert not missing, f"documented but absent: {missing}"
    top_level = {k.split(".")[0] for k in keys}
    assert set(data) == top_level, f"undocumented top-level keys: {set(data) - top_level}"
    again = profiling.ProfileReport.load(path)
    assert again.data == data and again.data["schema_version"] == 1
    data["schema_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(EdgekitError, match="schema_version 99"):
        profiling.ProfileReport.load(tmp_path / "future.json")


def test_markdown_has_table_and_ops(tmp_path):
    md = profiling.profile(make_toy_bundle(tmp_path / "toy"), "local", **TOY).to_markdown()
    assert "| prefill tok/s @8 | prefill tok/s @16 |" in md
    assert "### Top 2 ops" in md and "lm_head" in md


def test_compare_last_flags_a_real_slowdown(tmp_path, monkeypatch):
    bundle = make_toy_bundle(tmp_path / "toy", delay_ms=2)
    first = profiling.profile(bundle, "local", compare_last=True, **TOY)
    assert first.data["regressions"]["compared_with"] is None
    monkeypatch.setenv("EDGEKIT_TOY_EXTRA_DELAY_MS", "20")      # same files, same hash: ~10x slower steps
    slow = profiling.profile(bundle, "local", compare_last=True, threshold=0.10, **TOY)
    assert slow.data["regressions"]["compared_with"]["history_id"] == first.data["history_id"]
    flagged = {g["metric"] for g in slow.regressions}
    assert "decode_tokens_per_s" in flagged and "ttft_ms" in flagged
    other = profiling.profile(bundle, "local", compare_last=True, **{**TOY, "decode_tokens": 7})
    assert other.data["regressions"]["compared_with"] is None   # other settings: not comparable
    assert len(History().runs()) == 3


def test_cli_profile_then_report_compares_runs(tmp_path):
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        bundle = make_toy_bundle(tmp_path / name, delay_ms=1 if name == "a" else 3)
        out = tmp_path / f"{name}.json"
        res = runner.invoke(cli, ["profile", str(bundle), "--device", "local", "--prompt-lengths", "8,16",
                                  "--decode-tokens", "4", "--runs", "2", "--session-module", str(TOY_SESSION),
                                  "--json", str(out), "--md", str(tmp_path / f"{name}.md"),
                                  "--html", str(tmp_path / f"{name}.html")], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert out.exists() and (tmp_path / f"{name}.html").read_text().startswith("<!DOCTYPE html>")
        outs.append(str(out))
    res = runner.invoke(cli, ["report", *outs, "--html", str(tmp_path / "cmp.html")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "toy-a" in res.output and "toy-b" in res.output
    page = (tmp_path / "cmp.html").read_text()
    assert page.count("<svg") >= 5 and "toy-a @ local" in page and "toy-b @ local" in page


def test_cli_rejects_bad_prompt_lengths(tmp_path):
    res = CliRunner().invoke(cli, ["profile", str(tmp_path), "--prompt-lengths", "64,abc"])
    assert res.exit_code != 0 and "comma-separated integers" in res.output
