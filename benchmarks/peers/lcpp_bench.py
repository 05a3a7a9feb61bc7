"""Prefill/decode speed of a GGUF model through llama-cpp-python.

Runs in the llama-cpp venv. usage: lcpp_bench.py GGUF PROMPT_LEN GEN_LEN [THREADS] [RUNS]
Adapted from shared/peers/lcpp_bench.py (same prompt ids, same loop).
"""
import json
import sys
import time

from llama_cpp import Llama

path, prompt_len, gen_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
t0 = time.perf_counter()
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
load = time.perf_counter() - t0
ids = [(i * 7919) % 3000 + 10 for i in range(prompt_len)]


def run():
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    for _ in range(gen_len):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    t2 = time.perf_counter()
    return t1 - t0, gen_len / (t2 - t1)


run()
res = [run() for _ in range(runs)]
print(json.dumps({"load_s": round(load, 3), "prefill_tok_s": round(prompt_len / min(r[0] for r in res), 1),
                  "decode_tok_s": round(max(r[1] for r in res), 2), "threads": threads, "runs": runs}))
