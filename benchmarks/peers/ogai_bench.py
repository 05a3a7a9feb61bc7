"""Prefill/decode speed of an onnxruntime-genai model folder (the model builder's output).

Runs in the onnxruntime-genai venv. usage: ogai_bench.py FOLDER PROMPT_LEN GEN_LEN [THREADS] [RUNS]
Adapted from shared/peers/ogai_bench.py. The thread count lives in the folder's genai_config.json
(session_options.intra_op_num_threads, written at export by peers/setup.py); THREADS is only echoed.
"""
import json
import sys
import time

import onnxruntime_genai as og

folder, prompt_len, gen_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
t0 = time.perf_counter()
model = og.Model(folder)
load = time.perf_counter() - t0
ids = [(i * 7919) % 3000 + 10 for i in range(prompt_len)]


def run():
    p = og.GeneratorParams(model)
    p.set_search_options(max_length=prompt_len + gen_len, min_length=prompt_len + gen_len, do_sample=False)
    g = og.Generator(model, p)
    t0 = time.perf_counter()
    g.append_tokens(ids)
    t1 = time.perf_counter()
    n = 0
    while not g.is_done() and n < gen_len:
        g.generate_next_token()
        n += 1
    t2 = time.perf_counter()
    return t1 - t0, n / (t2 - t1)


run()
res = [run() for _ in range(runs)]
print(json.dumps({"load_s": round(load, 3), "prefill_tok_s": round(prompt_len / min(r[0] for r in res), 1),
                  "decode_tok_s": round(max(r[1] for r in res), 2), "threads": threads, "runs": runs}))
