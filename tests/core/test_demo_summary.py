"""`edgekit demo`'s closing summary read through a pipe (`| cat`, a CI log): every table row stays one line, however
wide, and the export's validation reads as words rather than a raw dict."""
from __future__ import annotations

import json
import os
import subprocess
import sys

# long options on purpose: the table is wider than the console's pipe width (edgekit.consoles.PIPE_WIDTH)
OPTIONS = {"linear_kernel": "edgekit", "attention_kernel": "edgekit", "embedding_bits": 8, "output_bits": 8,
           "group_size": 32, "accuracy_level": 1, "block_size": 128}
STAGES = {f"export.stage_{i}": 10.0 + i for i in range(20)}   # a stage-seconds line longer than PIPE_WIDTH
VALIDATION = {"max_abs_logit_diff": 1.4087986946105957, "tolerance": 1.9152460098266602, "target_tolerance": 0.01,
              "reference_noise_floor": 0.9576230049133301, "prompt_tokens": 7, "decode_steps": 8,
              "top1_agreement_vs_reference": 1.0, "top1_agreement_vs_fp32": 0.9333}
SUMMARY = f"""
from edgekit.demo import TargetRun, _print_summary
runs = [TargetRun(target=t, quant="source", options={OPTIONS!r}, validation={VALIDATION!r},
                  quality={{"mean_kl": 0.00235, "same_top": 0.97, "perplexity": 9.31, "reference_perplexity": 9.3}},
                  eager_answer_match=True, profile={{"decode_tokens_per_s": 62.6, "ttft_ms": 69.0}},
                  stage_seconds={STAGES!r}) for t in ("executorch", "onnx", "coreml")]
_print_summary(runs, {{"stage_seconds": {{"load": 2.8, "reference": 24.7}}, "export_jobs": 2, "seconds": 236.0,
                       "report": None}})
"""


def test_the_summary_table_keeps_each_row_on_one_line_in_a_pipe():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}   # a pipe's default width
    r = subprocess.run([sys.executable, "-c", SUMMARY], capture_output=True, text=True, timeout=120, check=True,
                       env=env)
    lines = r.stderr.splitlines()   # the demo prints on stderr, here a pipe
    opts = ", ".join(f"{k}={v}" for k, v in OPTIONS.items())
    for target in ("executorch", "onnx", "coreml"):
        row = [ln for ln in lines if ln.startswith("│") and f" {target} " in ln]
        assert len(row) == 1, "\n".join(lines)
        assert opts in row[0] and "1.41" in row[0] and "62.6" in row[0] and "ok" in row[0], row[0]
        stage_line = [ln for ln in lines if ln.startswith(f"{target} stage seconds:")]
        assert len(stage_line) == 1 and stage_line[0].endswith("export.stage_19 29.0"), "\n".join(lines)
    rows = [ln for ln in lines if ln.startswith(("│", "┃"))]
    assert len(rows) == 4, "\n".join(lines)          # the header and one line per target: no cell wrapped
    assert max(map(len, rows)) > 200                 # wider than the pipe width, and not cut to it either


def test_validation_reads_as_words():
    from edgekit.demo import validation_text

    text = validation_text(VALIDATION)
    assert text == ("max |Δlogit| 1.41 (tolerance 1.92, the reference's own noise 0.958) over 7 prompt tokens + "
                    "8 decode steps; same top-1 token 100% with the reference, 93% with fp32")
    assert "{" not in text and json.dumps(VALIDATION) not in text
    assert validation_text({}) == "not run"
    assert validation_text({"max_abs_logit_diff": 0.01, "tolerance": 0.5}) == "max |Δlogit| 0.01 (tolerance 0.5)"
