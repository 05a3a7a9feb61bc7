"""Every exported artifact is run in its own runtime and compared with the PyTorch reference."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekit.errors import ParityError
from edgekit.runtime.session import EagerSession, positions

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import Artifact, Session, Target, TargetSpec

log = logging.getLogger(__name__)


def probe_tokens(vocab_size: int, count: int, seed: int = 1234) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab_size, count).tolist()


def run_steps(session: "Session", prompt: list[int], follow: list[int]) -> np.ndarray:
    """Prefill `prompt`, then decode the `follow` tokens one by one (teacher-forced); last-position logits [N+1, V]."""
    session.reset()
    rows = [session.forward(np.asarray([prompt], dtype=np.int64), positions(0, len(prompt)))[0, -1]]
    for i, tok in enumerate(follow):
        rows.append(session.forward(np.asarray([[tok]], dtype=np.int64), positions(len(prompt) + i, 1))[0, -1])
    return np.stack(rows).astype(np.float32)


def greedy_steps(session: "Session", prompt: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    """Prefill, then `steps` greedy decode steps; the rows of last-position logits and the tokens chosen."""
    session.reset()
    rows = [session.forward(np.asarray([prompt], dtype=np.int64), positions(0, len(prompt)))[0, -1]]
    follow: list[int] = []
    for i in range(steps):
        follow.append(int(rows[-1].argmax()))
        rows.append(session.forward(np.asarray([[follow[-1]]], dtype=np.int64), positions(len(prompt) + i, 1))[0, -1])
    return np.stack(rows).astype(np.float32), follow


def compare(target: "Target", artifact: "Artifact", model: "EdgeModel", spec: "TargetSpec",
            prompt_len: int = 7, decode_steps: int = 8) -> dict[str, Any]:
    """Prefill + decode parity of the artifact against target.reference(); raises ParityError beyond tolerance."""
    prompt_len = min(prompt_len, spec.max_seq_len - decode_steps - 1)
    prompt = probe_tokens(model.config.vocab_size, prompt_len)
    ref_session = EagerSession(target.reference(model, spec))
    with torch.no_grad():
        ref, follow = greedy_steps(ref_session, prompt, decode_steps)
    got = run_steps(target.session(artifact), prompt, follow)
    diff = float(np.abs(got - ref).max())
    tol = target.tolerance(spec)
    figures: dict[str, Any] = {"max_abs_logit_diff": diff, "tolerance": tol, "prompt_tokens": prompt_len,
                               "decode_steps": decode_steps, "top1_agreement_vs_reference":
                               float((got.argmax(-1) == ref.argmax(-1)).mean())}
    if spec.quant != "fp32" or spec.kv_cache != "fp32":
        with torch.no_grad():
            fp32 = run_steps(EagerSession(model.decoder(spec.max_seq_len, spec.last_logits_only)), prompt, follow)
        figures["top1_agreement_vs_fp32"] = float((got.argmax(-1) == fp32.argmax(-1)).mean())
    log.info("validation of %s: max |Δlogit| %.3g (tolerance %.3g)", artifact.target, diff, tol)
    if not np.isfinite(diff) or diff > tol:
        raise ParityError(f"{artifact.target} artifact ({spec.quant}) differs from the PyTorch reference: max |Δlogit| "
                          f"{diff:.4g} > tolerance {tol:.4g} over {prompt_len} prefill + {decode_steps} decode steps")
    return figures
