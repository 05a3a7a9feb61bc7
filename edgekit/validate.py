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
    from edgekit.runtime.session import Session
    from edgekit.targets.base import Artifact, Target, TargetSpec

log = logging.getLogger(__name__)


def probe_tokens(vocab_size: int, count: int, seed: int = 1234) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab_size, count).tolist()


def run_steps(session: Session, prompt: list[int], follow: list[int]) -> np.ndarray:
    """Prefill `prompt`, then decode the `follow` tokens one by one (teacher-forced); last-position logits [N+1, V]."""
    session.reset()
    rows = [session.forward(np.asarray([prompt], dtype=np.int64), positions(0, len(prompt)))[0, -1]]
    for i, tok in enumerate(follow):
        rows.append(session.forward(np.asarray([[tok]], dtype=np.int64), positions(len(prompt) + i, 1))[0, -1])
    return np.stack(rows).astype(np.float32)


def greedy_steps(session: Session, prompt: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    """Prefill, then `steps` greedy decode steps; the rows of last-position logits and the tokens chosen."""
    session.reset()
    rows = [session.forward(np.asarray([prompt], dtype=np.int64), positions(0, len(prompt)))[0, -1]]
    follow: list[int] = []
    for i in range(steps):
        follow.append(int(rows[-1].argmax()))
        rows.append(session.forward(np.asarray([[follow[-1]]], dtype=np.int64), positions(len(prompt) + i, 1))[0, -1])
    return np.stack(rows).astype(np.float32), follow


def check_finite(rows: np.ndarray, who: str, prompt_len: int) -> None:
    """ParityError naming the first step whose logits hold NaN/Inf: a comparison with them means nothing (NaN on
    both sides, or a quantizer that turned NaN weights into finite codes, can look like agreement)."""
    bad = ~np.isfinite(rows)
    if not bad.any():
        return
    step = int(np.argmax(bad.any(axis=1)))
    where = (f"the prefill of {prompt_len} tokens" if step == 0
             else f"decode step {step} (position {prompt_len + step - 1})")
    raise ParityError(f"{who} produced {int(bad.sum())} non-finite logit(s) (NaN/Inf) over {rows.shape[0]} steps, "
                      f"first at {where}; the weights or the runtime compute garbage, so parity cannot be judged")


NOISE_SCALE = 1e-6      # relative perturbation of the activations (noise_floor) used to measure the reference's own noise
NOISE_MARGIN = 2.0      # an artifact may differ from the reference by this many times the reference's own noise


def noise_floor(reference: torch.nn.Module, prompt: list[int], follow: list[int], seeds: int = 3) -> float | None:
    """How far the reference moves when its activations move by 1e-6 (relative): the precision any implementation
    of it can promise. Dynamic activation quantization (int8 per token) makes this large on real weights: a value on
    a rounding boundary flips a whole quantization step, and 30 layers compound it. The jitter goes into the
    embedding and into every RMSNorm's output: a norm divides by its input's size, so rounding in a small input
    (Gemma's norm after attention) becomes relatively large, and a runtime's last-bit differences there are what the
    quantization steps see. None if there is nothing to hook."""
    emb = getattr(reference, "tok_embeddings", None)
    if emb is None:
        return None
    points = [emb] + [m for m in reference.modules() if type(m).__name__.endswith("RMSNorm")]
    session = EagerSession(reference)
    base = run_steps(session, prompt, follow)
    worst = 0.0
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)

        def jitter(_m, _i, out, gen=gen):
            return out * (1 + NOISE_SCALE * torch.randn(out.shape, generator=gen, dtype=out.dtype))

        handles = [m.register_forward_hook(jitter) for m in points]
        try:
            worst = max(worst, float(np.abs(run_steps(session, prompt, follow) - base).max()))
        finally:
            for handle in handles:
                handle.remove()
    return worst


def compare(target: Target, artifact: Artifact, model: EdgeModel, spec: TargetSpec,
            prompt_len: int = 7, decode_steps: int = 8) -> dict[str, Any]:
    """Prefill + decode parity of the artifact against target.reference(); raises ParityError beyond tolerance."""
    prompt_len = min(prompt_len, spec.max_seq_len - decode_steps - 1)
    prompt = probe_tokens(model.config.vocab_size, prompt_len)
    reference = target.reference(model, spec)
    ref_session = EagerSession(reference)
    with torch.no_grad():
        ref, follow = greedy_steps(ref_session, prompt, decode_steps)
        floor = noise_floor(reference, prompt, follow) if spec.quant != "fp32" or spec.kv_cache != "fp32" else None
    check_finite(ref, f"the PyTorch reference for {artifact.target} ({spec.quant})", prompt_len)
    got = run_steps(target.session(artifact), prompt, follow)
    check_finite(got, f"the {artifact.target} artifact ({spec.quant})", prompt_len)
    diff = float(np.abs(got - ref).max())
    target_tol = target.tolerance(spec)
    # The target's stated tolerance, unless the reference itself is noisier than that (then: twice its noise).
    tol = max(target_tol, NOISE_MARGIN * floor) if floor is not None else target_tol
    figures: dict[str, Any] = {"max_abs_logit_diff": diff, "tolerance": tol, "target_tolerance": target_tol,
                               "reference_noise_floor": floor, "prompt_tokens": prompt_len,
                               "decode_steps": decode_steps, "top1_agreement_vs_reference":
                               float((got.argmax(-1) == ref.argmax(-1)).mean())}
    if spec.quant != "fp32" or spec.kv_cache != "fp32":
        with torch.no_grad():
            fp32 = run_steps(EagerSession(model.decoder(spec.max_seq_len, spec.last_logits_only)), prompt, follow)
        check_finite(fp32, "the unquantized (fp32) model", prompt_len)
        figures["top1_agreement_vs_fp32"] = float((got.argmax(-1) == fp32.argmax(-1)).mean())
    log.info("validation of %s: max |Δlogit| %.3g (tolerance %.3g)", artifact.target, diff, tol)
    if not np.isfinite(diff) or diff > tol:
        raise ParityError(f"{artifact.target} artifact ({spec.quant}) differs from the PyTorch reference: max |Δlogit| "
                          f"{diff:.4g} > tolerance {tol:.4g} over {prompt_len} prefill + {decode_steps} decode steps")
    return figures
