"""SmolLM2-135M end to end through the Linux evaluator: 64 teacher-forced tokens vs the eager graph."""
from __future__ import annotations

import numpy as np
import torch

from edgekit.runtime.session import EagerSession
from edgekit.targets.base import TargetSpec
from edgekit.validate import run_steps

TEXT = ("Once upon a time, there was a little girl who lived in a village near the forest. Whenever she went out, "
        "the little girl wore a red riding cloak, so everyone in the village called her Little Red Riding Hood. "
        "One morning, she asked her mother if she could go to visit her grandmother. Her mother packed a basket "
        "with bread, butter and a small pot of honey, and told her to stay on the path and not to talk to strangers.")


def test_smollm2_teacher_forced_top1(smollm2, smollm2_coreml):
    from edgekit_coreml import CoreMLTarget

    ids = smollm2.tokenizer.encode(TEXT)
    assert len(ids) >= 72
    prompt, follow = ids[:8], ids[8:72]
    got = run_steps(CoreMLTarget().session(smollm2_coreml, runtime="evaluator"), prompt, follow)
    with torch.no_grad():
        ref = run_steps(EagerSession(smollm2.decoder(smollm2_coreml.metadata["max_seq_len"])), prompt, follow)
    agreement = float((got.argmax(-1) == ref.argmax(-1)).mean())
    diff = float(np.abs(got - ref).max())
    print(f"SmolLM2-135M fp16 Core ML program vs eager fp32: top-1 {agreement:.3f}, max |Δlogit| {diff:.3f}")
    assert agreement >= 0.99
    assert diff <= CoreMLTarget().tolerance(TargetSpec(quant="fp16"))  # 0.25: fp16 rounding over 30 layers
