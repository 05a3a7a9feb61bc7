"""The executorch target's chunked HQQ equals torchao's whole-tensor hqq_scale_only, and the decoder it quantizes
equals torchao's quantize_ with the same configs (the path ExecuTorch's and optimum-executorch's exports take)."""
from __future__ import annotations

import pytest
import torch
from edgekit_executorch import quantize as quant
from torch import nn

CASES = [((96, 64), 32, 4), ((64, 256), 128, 4), ((80, 64), None, 8), ((48, 128), None, 4), ((40, 64), 32, 8)]


@pytest.mark.parametrize(("shape", "group", "bits"), CASES)
def test_chunked_hqq_equals_torchao(shape, group, bits, monkeypatch):
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_scale_only_hqq as torchao_hqq

    monkeypatch.setattr(quant, "CHUNK_ELEMENTS", 7 * shape[1])  # several chunks, the last one partial
    gen = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, generator=gen) * 0.05
    w[3] = 0.0                       # an all-zero row: scale clamps to eps, codes stay 0
    w[5, : group or shape[1]] *= 40  # an outlier group
    qmin, qmax = (-8, 7) if bits == 4 else (-128, 127)
    g = group or shape[1]
    want_q, want_s = torchao_hqq(w, [1, g], qmin, qmax)
    got_q, got_s = quant.hqq_scale_only(w, g, qmin, qmax)
    assert torch.equal(got_q, want_q.to(torch.int8))  # stated tolerance: exact
    assert torch.equal(got_s, want_s)


def _quantize_with_torchao(decoder: nn.Module, qp: quant.QuantPlan) -> nn.Module:
    """The former implementation: torchao quantize_ with the configs ExecuTorch's LLM export uses."""
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.utils import unwrap_tensor_subclass

    def linear_config(bits, group):
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4 if bits == 4 else torch.int8,
            weight_granularity=PerAxis(0) if group is None else PerGroup(group),
            intx_choose_qparams_algorithm=quant.QPARAMS_ALGORITHM)

    emb = IntxWeightOnlyConfig(weight_dtype=torch.int4 if qp.embedding_bits == 4 else torch.int8,
                               granularity=PerAxis(0) if qp.embedding_bits == 8 else PerGroup(32),
                               intx_choose_qparams_algorithm=quant.QPARAMS_ALGORITHM)
    quantize_(decoder, emb, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    quantize_(decoder, linear_config(4, qp.group_size),
              filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn != "output")
    quantize_(decoder, linear_config(qp.output_bits, qp.output_group_size),
              filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn == "output")
    for m in decoder.modules():  # what XNNPACK will hold: group-wise linear scales in bf16 (see xnnpack_group_scale)
        w = getattr(m, "weight", None)
        if isinstance(m, nn.Linear) and w.block_size[1] < w.shape[1]:
            w.scale = quant.xnnpack_group_scale(w.scale)
    return unwrap_tensor_subclass(decoder)


@pytest.mark.parametrize("case", ["qwen3", "llama"])  # tied and untied output layers
def test_decoder_equals_torchao_quantize(tiny_model, case):
    model = tiny_model(case)
    qp = quant.plan("8da4w", {"group_size": 32, "embedding_bits": 8})
    ours = quant.apply(model.decoder(32), qp)
    theirs = _quantize_with_torchao(model.decoder(32), qp)
    tokens, pos = torch.tensor([[1, 5, 9, 2]]), torch.arange(4)
    with torch.no_grad():
        diff = (ours(tokens, pos) - theirs(tokens, pos)).abs().max().item()
    assert diff == 0.0  # stated tolerance: bit-identical weights, so bit-identical logits
    assert model.weights["tok_embeddings.weight"].dtype == torch.float32  # the shared tensors stay float


@pytest.mark.parametrize("case", ["qwen3", "llama"])  # tied and untied output layers
@pytest.mark.parametrize("options", [{"group_size": 32, "embedding_bits": 4}, {"group_size": 32}])
def test_bf16_model_quantizes_without_float_copy(checkpoint_dir, case, options):
    """A model loaded in bf16 gives the same quantized decoder as the same bf16 values held in fp32, and its weight
    matrices are never converted to fp32 whole (they stay behind zero-stride placeholders until quantized; a float
    embedding is materialized)."""
    from edgekit_executorch.export import build_decoder, decoder_without_float_copy

    import edgekit
    from edgekit.targets.base import TargetSpec

    bf16 = edgekit.load(checkpoint_dir(case), dtype=torch.bfloat16)
    fp32 = edgekit.load(checkpoint_dir(case), dtype=torch.bfloat16)
    fp32.weights.update({k: v.to(torch.float32) for k, v in fp32.weights.items()})
    spec = TargetSpec(quant="8da4w", max_seq_len=32, options=options)
    _, sources = decoder_without_float_copy(bf16, spec)
    assert sources and all(t.dtype == torch.bfloat16 for _, t in sources.values())
    got, want = build_decoder(bf16, spec, for_export=False), build_decoder(fp32, spec, for_export=False)
    assert all(p.stride() != (0, 0) for p in got.parameters())  # no placeholder left behind
    tokens, pos = torch.tensor([[3, 1, 4, 1, 5]]), torch.arange(5)
    with torch.no_grad():
        diff = (got(tokens, pos) - want(tokens, pos)).abs().max().item()
    assert diff == 0.0  # stated tolerance: exact (bf16 -> fp32 is exact; the same codes and scales)


@pytest.mark.parametrize(("in_features", "group"), [((896, 896, 4864), 128), ((576, 576, 1536), 64),
                                                     ((64, 64, 160), 32)])
def test_8da4w_defaults(in_features, group):
    """Qwen2.5-0.5B, SmolLM2-135M and the tiny checkpoints' widths: the largest group dividing them all; 4-bit
    embedding unless the caller says otherwise; the output layer follows the linears' group."""
    qp = quant.plan("8da4w", {}, in_features)
    assert (qp.group_size, qp.embedding_bits, qp.output_bits, qp.output_group_size) == (group, 4, 4, group)
    assert quant.plan("8da4w", {"embedding_bits": 8, "group_size": 32}, in_features).embedding_bits == 8
    assert quant.plan("fp32", {}, in_features).embedding_bits is None


@pytest.mark.parametrize(("case", "scheme", "options"), [
    ("qwen3", "8da4w", {"group_size": 32, "embedding_bits": 4}),    # tied head, 4-bit table
    ("llama", "8da4w", {"group_size": 32, "embedding_bits": 8, "output_bits": 8}),
    ("qwen2", "8da8w", {"embedding_bits": 8}),                       # biases
])
def test_reference_dequantized_once_is_bit_identical(tiny_model, case, scheme, options):
    """The eager reference holds each weight dequantized once (torchao re-dequantizes on every call): same logits,
    bit for bit, over a prefill and decode steps; no torchao tensor left in it."""
    from edgekit_executorch.eager_reference import dequantize_once

    model = tiny_model(case)
    qp = quant.plan(scheme, options)
    torchao_ref = quant.apply(model.decoder(32), qp)
    ours = quant.apply(model.decoder(32), qp)
    assert dequantize_once(ours) >= 2 * model.config.num_layers
    with torch.no_grad():
        for tokens, pos in ((torch.tensor([[1, 5, 9, 2]]), torch.arange(4)), (torch.tensor([[7]]), torch.tensor([4])),
                            (torch.tensor([[3]]), torch.tensor([5]))):
            assert torch.equal(ours(tokens, pos), torchao_ref(tokens, pos))
    assert not any(type(t).__name__ == "IntxUnpackedToInt8Tensor" for m in ours.modules()
                   for t in (getattr(m, "weight", None),))
