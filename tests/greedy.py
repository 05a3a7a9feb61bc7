"""One parity check for every target's exports: the artifact's greedy continuation against the eager graph it is
validated against, with teacher-forced logits within a stated tolerance (near-ties may part, clear choices not)."""
from __future__ import annotations

import numpy as np
import torch

from edgekit.runtime.session import EagerSession
from edgekit.targets.base import TargetSpec
from edgekit.targets.registry import get_target
from edgekit.validate import greedy_steps, noise_floor, probe_tokens, run_steps

GREEDY_STEPS = 16
# |Δlogit| at which a difference is a bug whatever the reference's noise: int4-vs-fp32 on SmolLM2 is ~13
BUG_DISTANCE = 10.0


def eager_reference(target_name: str, model, artifact):
    """The eager session an artifact is compared with (the fp32 decoder, or the target's quantized reference)."""
    meta = artifact.metadata
    spec = TargetSpec(quant=meta["quant"], max_seq_len=meta["max_seq_len"], last_logits_only=meta["last_logits_only"],
                      kv_cache=meta.get("kv_cache", "fp32"), options=meta["options"])
    if spec.quant == "fp32" and spec.kv_cache == "fp32":
        return EagerSession(model.decoder(spec.max_seq_len, spec.last_logits_only)), spec
    return EagerSession(get_target(target_name).reference(model, spec)), spec


def check_greedy(target_name: str, model, artifact, prompt_len: int = 9, tolerance: float | None = None,
                 prompt: list[int] | None = None, floor_factor: float | None = None,
                 steps: int = GREEDY_STEPS) -> tuple[float, list[int]]:
    """Greedy continuations agree, and teacher-forced logits stay within the target's tolerance; returns the max
    |Δlogit| and the artifact's continuation.

    Random tiny checkpoints have near-ties; the continuations may part only at a step where the eager graph's top-2
    margin is within twice the measured |Δlogit| (a tie at this precision), never at a clear choice.
    floor_factor: also allow that many times the quantized reference's own noise floor measured on THIS prompt and
    continuation (validation measured it on its own probe; the chaos of int8 dynamic activations depends on the text).
    """
    target = get_target(target_name)
    eager, spec = eager_reference(target_name, model, artifact)
    prompt = prompt or probe_tokens(model.config.vocab_size, prompt_len, seed=7)
    with torch.no_grad():
        want_rows, want = greedy_steps(eager, prompt, steps)
    session = target.session(artifact)
    _, got = greedy_steps(session, prompt, steps)
    forced = run_steps(session, prompt, want)  # the artifact fed the eager continuation
    diff = float(np.abs(forced - want_rows).max())
    tol = target.tolerance(spec) if tolerance is None else tolerance
    if floor_factor is not None:
        floor = noise_floor(eager.decoder, prompt, want)
        assert diff < BUG_DISTANCE, (f"max |Δlogit| {diff:.3g} is near the int4-vs-fp32 distance (~13 on SmolLM2): "
                                     f"a real bug, whatever the reference's noise floor ({floor:.3g})")
        tol = max(tol, floor_factor * floor)
    assert diff <= tol, f"max |Δlogit| {diff} > tolerance {tol}"
    if got != want:
        step = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        top2 = np.sort(want_rows[step])[-2:]
        margin = float(top2[1] - top2[0])
        assert margin <= 2 * diff, (f"greedy continuation differs at step {step} (artifact {got} vs eager {want}) "
                                    f"where eager's top-2 margin {margin:.4g} is not a near-tie (|Δlogit| {diff:.3g})")
    return diff, got
