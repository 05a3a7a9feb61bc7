"""A logits server over a peer's own artifact in its own runtime, for benchmarks/bench_quality.py (run in the peer's
venv: only numpy and that runtime are imported).

    python peer_logits.py ort MODEL.onnx THREADS      # onnxruntime-genai builder's decoder, run by ONNX Runtime
    python peer_logits.py et MODEL.pte THREADS        # optimum-executorch's program, run by ExecuTorch's runtime

The protocol is lcpp_logits.py's (one JSON request per line on stdin, one JSON answer per line on stdout):
  {"op": "reset"}                               -> {"ok": true}
  {"op": "forward", "tokens": [...], "out": P}  -> {"ok": true, "rows": n}; float32 [n, vocab] logits of those
                                                   positions written to P (.npy), the KV cache kept for the next call
"""
import json
import sys

import numpy as np


class OrtDecoder:
    """The builder's model.onnx: input_ids + attention_mask + past_key_values.* in, logits + present.* out."""

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.path = path
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.past_names = [i.name for i in self.sess.get_inputs() if i.name.startswith("past_key_values.")]
        shapes = {i.name: i.shape for i in self.sess.get_inputs()}
        self.kv_heads = {n: int(shapes[n][1]) for n in self.past_names}
        self.head_dim = {n: shapes[n][3] for n in self.past_names}
        self.reset()

    def reset(self) -> None:
        self.past = None
        self.n = 0

    def forward(self, tokens: list[int]) -> np.ndarray:
        ids = np.asarray([tokens], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones((1, self.n + ids.shape[1]), dtype=np.int64)}
        if self.past is None:
            dim = self._head_dim()
            self.past = {n: np.zeros((1, self.kv_heads[n], 0, dim), dtype=np.float32) for n in self.past_names}
        feed.update(self.past)
        outs = self.sess.run(None, feed)
        names = [o.name for o in self.sess.get_outputs()]
        res = dict(zip(names, outs))
        self.past = {n: res[n.replace("past_key_values.", "present.")] for n in self.past_names}
        self.n += ids.shape[1]
        return res["logits"][0].astype(np.float32)

    def _head_dim(self) -> int:
        dims = {d for d in self.head_dim.values() if isinstance(d, int)}
        if dims:
            return dims.pop()
        from pathlib import Path

        cfg = json.loads((Path(self.path).parent / "genai_config.json").read_text())
        return int(cfg["model"]["decoder"]["head_size"])


class EtProgram:
    """optimum-executorch's model.pte: forward(input_ids [1, S], cache_position [S]) -> logits; the KV cache lives in
    the program's mutable buffers, so reset loads the method again."""

    def __init__(self, path: str, threads: int):
        import executorch.extension.llm.custom_ops.custom_ops
        import executorch.kernels.quantized  # noqa: F401  (its quantized embedding kernels)
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        _unsafe_reset_threadpool(threads)
        self.program = Runtime.get().load_program(path)
        self.reset()

    per_token = False   # set when the program returns only the last position's logits

    def reset(self) -> None:
        self.method = self.program.load_method("forward")
        self.n = 0

    def _call(self, tokens: list[int]) -> np.ndarray:
        import torch

        ids = torch.tensor([tokens], dtype=torch.long)
        pos = torch.arange(self.n, self.n + len(tokens), dtype=torch.long)
        out = self.method.execute([ids, pos])[0]
        self.n += len(tokens)
        return out.reshape(-1, out.shape[-1]).float().numpy()

    def forward(self, tokens: list[int]) -> np.ndarray:
        if self.per_token:
            return np.concatenate([self._call([t]) for t in tokens])
        start = self.n
        out = self._call(tokens)
        if out.shape[0] == len(tokens):
            return out
        if out.shape[0] == 1 and start == 0:   # last position only: run this window again, one token per call
            self.per_token = True
            self.reset()
            return self.forward(tokens)
        raise RuntimeError(f"the program returned {out.shape[0]} rows for {len(tokens)} tokens at position {start}")


def main() -> int:
    kind, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if model is None:
                model = {"ort": OrtDecoder, "et": EtProgram}[kind](path, threads)
            if req["op"] == "reset":
                model.reset()
                print(json.dumps({"ok": True}), flush=True)
            else:
                rows = model.forward(req["tokens"])
                np.save(req["out"], rows)
                print(json.dumps({"ok": True, "rows": int(rows.shape[0])}), flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the caller, which fails the row
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
