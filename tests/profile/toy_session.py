"""A numpy-only stand-in model following the standalone-session contract, for fast device/fault tests.

It sleeps `delay_ms` per forward call (from the manifest's artifact metadata) so tests can make a run slow enough
to be cut mid-way. The real-model tests use the ONNX / ExecuTorch targets' own standalone sessions.
"""
import json
import os
import time

import numpy as np


class ToySession:
    def __init__(self, folder, threads=None, profile_dir=None):
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
        meta = manifest["artifact"]["metadata"]
        self.max_seq_len = int(meta["max_seq_len"])
        # logits depend only on each position's token, so every row is exact whatever the forward's width
        self.last_logits_only = bool(manifest.get("last_logits_only", True))
        # EDGEKIT_TOY_EXTRA_DELAY_MS slows the same bundle down (same manifest hash): a regression to detect
        self.delay = (float(meta.get("delay_ms", 0)) + float(os.environ.get("EDGEKIT_TOY_EXTRA_DELAY_MS", "0"))) / 1000.0
        w = np.load(os.path.join(folder, "toy.npz"))
        self.embed, self.head = w["embed"], w["head"]
        self.profile_dir = profile_dir
        self.ops = {"embed": [0, 0.0], "lm_head": [0, 0.0]}

    def reset(self):
        pass

    def _op(self, name, fn):
        t = time.perf_counter()
        out = fn()
        self.ops[name][0] += 1
        self.ops[name][1] += (time.perf_counter() - t) * 1000.0
        return out

    def forward(self, tokens, input_pos):
        rows = np.asarray(tokens)[0, -1:] if self.last_logits_only else np.asarray(tokens)[0]
        h = self._op("embed", lambda: self.embed[rows])
        logits = self._op("lm_head", lambda: h @ self.head)
        time.sleep(self.delay)
        return logits.reshape(1, len(rows), -1).astype(np.float32)

    def op_profile(self):
        if self.profile_dir is None:
            raise RuntimeError("open the session with profile_dir to profile ops")
        return [{"name": k, "op_type": "Toy" + k.title(), "calls": c, "total_ms": ms} for k, (c, ms) in self.ops.items()]


def open_session(folder, threads=None, profile_dir=None):
    return ToySession(folder, threads, profile_dir)
