"""Prefill/decode speed of an optimum-executorch .pte: forward(tokens[1,T], cache_position[T]) -> logits.

Runs in the optimum-executorch venv. usage: et_bench.py PTE PROMPT_LEN GEN_LEN [THREADS] [RUNS]
Loads, warms up once, times RUNS runs; prints one JSON line (prefill = fastest run, decode = fastest run).
Adapted from shared/peers/et_bench.py (same prompt ids, same loop), with the thread count set explicitly, and the
step's host side done the way edgekit's own session does it (standalone_session.py), so that both .pte files are
timed by the same loop: the logits are read without the pybindings' clone and the argmax is numpy's. Both the clone
and torch's argmax over a 151936-wide row are ATen ops that torch runs on OpenMP threads, and libgomp's worker then
spins after each step on the cores ExecuTorch's pool needs (perf on the 0.5B decode: a quarter of all cycles).
"""
import json
import sys
import time

import executorch.extension.llm.custom_ops.custom_ops
import executorch.kernels.quantized  # noqa: F401  (quantized kernels)
import numpy as np
import torch
from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
from executorch.runtime import Runtime

pte, prompt_len, gen_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
_unsafe_reset_threadpool(threads)
torch.set_num_threads(threads)
t0 = time.perf_counter()
prog = Runtime.get().load_program(pte)
m = prog.load_method("forward")
load = time.perf_counter() - t0
ids = torch.tensor([[(i * 7919) % 3000 + 10 for i in range(prompt_len)]], dtype=torch.long)


def step(inputs):
    """The logits of one forward as the caller's own numpy array (see the module docstring)."""
    return np.array(m._method(inputs, clone_outputs=False)[0].numpy(), copy=True)


def run():
    t0 = time.perf_counter()
    out = step([ids, torch.arange(prompt_len, dtype=torch.long)])
    t1 = time.perf_counter()
    tok = torch.tensor([[int(out[0, -1].argmax())]], dtype=torch.long)
    for i in range(gen_len):
        out = step([tok, torch.tensor([prompt_len + i], dtype=torch.long)])
        tok = torch.tensor([[int(out[0, -1].argmax())]], dtype=torch.long)
    t2 = time.perf_counter()
    return t1 - t0, gen_len / (t2 - t1)


run()
res = [run() for _ in range(runs)]
print(json.dumps({"load_s": round(load, 3), "prefill_tok_s": round(prompt_len / min(r[0] for r in res), 1),
                  "decode_tok_s": round(max(r[1] for r in res), 2), "threads": threads, "runs": runs}))
