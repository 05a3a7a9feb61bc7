"""A llama.cpp logits server for benchmarks/bench_quality.py, run in the llama-cpp peer venv (llama-cpp-python only).

    python lcpp_logits.py MODEL.gguf N_CTX THREADS

Reads one JSON request per line on stdin and answers one JSON line on stdout:
  {"op": "reset"}                               -> {"ok": true}
  {"op": "forward", "tokens": [...], "out": P}  -> {"ok": true, "rows": n}; float32 [n, vocab] logits of those
                                                   positions written to P (.npy), the KV cache kept for the next call
  {"op": "quantize", "src": A, "dst": B, "ftype": "Q4_0"|"Q4_K_M"} -> {"ok": true} (llama.cpp's own requantization)
"""
import json
import sys

import numpy as np


def quantize(src: str, dst: str, ftype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[ftype]
    params.allow_requantize = True   # the source is itself a quantized file (as a user would have it)
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize {src} -> {dst} ({ftype}) failed")


def main() -> int:
    model, n_ctx, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "quantize":
                quantize(req["src"], req["dst"], req["ftype"])
                print(json.dumps({"ok": True}), flush=True)
                continue
            if llm is None:
                from llama_cpp import Llama

                llm = Llama(model_path=model, n_ctx=n_ctx, logits_all=True, n_threads=threads, n_batch=n_ctx,
                            verbose=False)
            if req["op"] == "reset":
                llm.reset()
                print(json.dumps({"ok": True}), flush=True)
            else:
                before = llm.n_tokens
                llm.eval(req["tokens"])
                rows = np.asarray(llm.scores[before:llm.n_tokens], dtype=np.float32)
                np.save(req["out"], rows)
                print(json.dumps({"ok": True, "rows": int(rows.shape[0])}), flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the caller, which fails the row
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
