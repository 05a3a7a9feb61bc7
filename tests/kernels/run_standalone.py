"""Greedy tokens through a folder's own standalone_session.py, with edgekit made unimportable (what a machine that
never exported the artifact has):

    python run_standalone.py SESSION_FILE N_TOKENS PROMPT_JSON FOLDER [FOLDER ...]

prints {"ids": [[...] per folder], "libraries": <kernel libraries loaded in this process>}. Every folder opens in
this one process, so two artifacts with the same kernels share one loaded library."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np


def greedy(session, prompt: list[int], n: int) -> list[int]:
    """Prefill `prompt`, then n argmax steps; the n generated ids."""
    session.reset()
    logits = session.forward(np.asarray([prompt], dtype=np.int64), np.arange(len(prompt), dtype=np.int64))
    out: list[int] = []
    for i in range(n):
        out.append(int(logits[0, -1].argmax()))
        logits = session.forward(np.asarray([[out[-1]]], dtype=np.int64), np.asarray([len(prompt) + i]))
    return out


def main() -> None:
    for name in ("edgekit", "edgekit_executorch", "edgekit_onnx"):
        sys.modules[name] = None   # import edgekit -> ImportError
    session_file, n, prompt, folders = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4:]
    spec = importlib.util.spec_from_file_location("bundle_standalone_session", session_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ids = [greedy(mod.open_session(folder), prompt, n) for folder in folders]
    registry = sys.modules.get("_edgekit_executorch_kernel_registry")
    print(json.dumps({"ids": ids, "libraries": len(registry.by_sha) if registry else 0}))


if __name__ == "__main__":
    main()
