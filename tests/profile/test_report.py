"""Reports: JSON round trip against docs/profile-schema.md, Markdown, history and --compare-last, the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TOY_SESSION, make_toy_bundle

from edgekit import profiling
from edgekit.cli import cli
from edgekit.errors import EdgekitError
from edgekit.profiling.history import History

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


# ---- faults: the measurements are never lost, bad files are named --------------------------------------------------
def _cli_profile(bundle, tmp_path, *extra, env=None):
    """`edgekit profile` in a subprocess (the CLI's own logging prints warnings there)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgekit", "profile", str(bundle), "--device", "local", "--prompt-lengths", "8",
           "--decode-tokens", "3", "--runs", "1", "--session-module", str(TOY_SESSION), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})


def test_a_corrupt_history_is_a_warning_and_the_outputs_are_written(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "profile-history.sqlite3").write_bytes(b"this is not a database" * 100)
    res = _cli_profile(make_toy_bundle(tmp_path / "toy"), tmp_path, "--json", str(tmp_path / "r.json"),
                       "--md", str(tmp_path / "r.md"), "--compare-last", env={"EDGEKIT_CACHE_DIR": str(cache)})
    assert res.returncode == 0, res.stderr
    err = " ".join(res.stderr.split())
    assert "profile history" in err and "could not be used" in err and "is not stored in it" in err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["results"]["prompt_lengths"] and data["history_id"] is None
    assert data["regressions"]["note"] == "history unavailable; nothing compared"
    assert (tmp_path / "r.md").read_text().startswith("#")


def test_an_unwritable_history_folder_keeps_the_report(tmp_path, monkeypatch):
    afile = tmp_path / "home-is-a-file"
    afile.write_text("x")
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(afile / "cache"))   # like a read-only HOME: mkdir fails
    report = profiling.profile(make_toy_bundle(tmp_path / "toy"), "local", **TOY)
    assert report.results["prompt_lengths"] and report.data["history_id"] is None
    assert len(report.warnings) == 1 and "home-is-a-file/cache/profile-history.sqlite3" in report.warnings[0]


def test_an_unwritable_html_still_writes_json_and_md_then_exits_2(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    res = _cli_profile(make_toy_bundle(tmp_path / "toy"), tmp_path, "--html", str(afile / "r.html"),
                       "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"), "--no-history")
    assert res.returncode == 2, res.stderr
    assert "OutputPathError" in res.stderr and "cannot write" in res.stderr and "r.html" in res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is True and (tmp_path / "r.md").exists()


def _report_json(tmp_path) -> dict:
    report = profiling.profile(make_toy_bundle(tmp_path / "toy"), "local", history=False, **TOY)
    return json.loads(report.to_json())


def test_cli_report_on_a_binary_file(tmp_path):
    (tmp_path / "r.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "r.json")])   # main() maps EdgekitError to exit 2
    assert isinstance(res.exception, EdgekitError), res.output
    assert "r.json is not a readable profile report" in str(res.exception)
    assert "UnicodeDecodeError" in str(res.exception)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["device"].pop("uri"), "device.uri must be a string"),
    (lambda d: d["results"].update(prompt_lengths="8,16"), "results.prompt_lengths is str, expected a list"),
    (lambda d: d["results"]["prompt_lengths"][0].update(prompt_length="8"), r"prompt_lengths\[0\] needs an integer"),
    (lambda d: d["results"].update(ttft_ms=[1, 2]), "results.ttft_ms is list, expected a spread object or null"),
    (lambda d: d["results"]["decode_tokens_per_s"].update(median="fast"), "decode_tokens_per_s.median is str"),
])
def test_report_refuses_json_that_is_not_a_profile_report(tmp_path, edit, message):
    data = _report_json(tmp_path)
    edit(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(EdgekitError, match=r"bad\.json does not match the profile report schema .*" + message):
        profiling.ProfileReport.load(tmp_path / "bad.json")


def test_cli_report_with_an_unwritable_html_exits_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "r.json").write_text(json.dumps(_report_json(tmp_path)))
    afile = tmp_path / "f"
    afile.write_text("x")
    res = subprocess.run([sys.executable, "-m", "edgekit", "report", str(tmp_path / "r.json"), "--html",
                          str(afile / "cmp.html")], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert "OutputPathError" in res.stderr and "cmp.html" in res.stderr and "Traceback" not in res.stderr
    assert afile.read_text() == "x"
