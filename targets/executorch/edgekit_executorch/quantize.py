"""Quantization schemes of the ExecuTorch target: the torchao tensors (IntxUnpackedToInt8Tensor, hqq_scale_only
qparams) that `quantize_` makes in ExecuTorch's own LLM export (executorch/extension/llm/export/quantize.py) and in
optimum-executorch, built here from a chunked HQQ that gives the same codes and scales several times faster
(tests/executorch/test_quantize.py checks both equalities).

- fp32:  no quantization.
- 8da8w: int8 per-output-channel weights in every linear. XNNPACK has no fp32-activation x int8-weight GEMM that
         ExecuTorch's partitioner delegates (a weight-only dequant + linear would stay in portable kernels), so the
         activations are quantized dynamically per token to int8 inside the op (qd8-f32-qc8w).
- 8da4w: int8 dynamic (per token) activations x int4 weights, groups of `group_size` (32, 64 or 128) input channels.
- source: a quantized checkpoint's own grids (a GGUF's blocks) kept as stored, in edgekit's int4 kernel with
         activations per group (source_q4.py); the file fixes groups and bits.
Options: `embedding_bits` (8: per row, 4: groups of 32) quantizes the token embedding (weight-only;
ExecuTorch's quantized embedding kernels), `output_bits` (8: per channel, 4: groups of `group_size`) the output layer
(it follows the scheme by default; fp32 keeps it float unless asked).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from edgekit.errors import UnsupportedOption

log = logging.getLogger(__name__)

SCHEMES = ("fp32", "8da8w", "8da4w", "source")
GROUP_SIZES = (32, 64, 128)
BITS = (4, 8)
LINEAR_KERNELS = ("xnnpack", "edgekit")  # who runs an 8da4w linear: XNNPACK's GEMM, or edgekit::linear_q4
QPARAMS_ALGORITHM = "hqq_scale_only"  # what ExecuTorch's and optimum-executorch's LLM exports use


@dataclass(frozen=True)
class QuantPlan:
    scheme: str
    group_size: int | None          # linears' weight group (None: per channel)
    embedding_bits: int | None      # None: float
    output_bits: int | None         # None: float
    output_group_size: int | None
    linear_kernel: str = "xnnpack"

    def describe(self) -> dict[str, Any]:
        return asdict(self) | {"qparams_algorithm": QPARAMS_ALGORITHM}


def linear_in_features(cfg: Any) -> tuple[int, ...]:
    """The input widths of a decoder's linears (wq/wk/wv and w1/w3: hidden; wo: heads x head_dim; w2: intermediate)."""
    return (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.intermediate_size)


def default_group_size(in_features: tuple[int, ...]) -> int:
    """8da4w's default group: the largest of 128, 64, 32 that divides every linear's input width (Qwen2.5-0.5B: 128,
    SmolLM2-135M: 64). Larger groups read fewer scale bytes per token (bf16 scales: 0.125 vs 0.5 bit per weight)."""
    return next((g for g in sorted(GROUP_SIZES, reverse=True) if all(f % g == 0 for f in in_features)), 32)


def plan(scheme: str, options: dict[str, Any], in_features: tuple[int, ...] = ()) -> QuantPlan:
    """Checks the scheme's options; every bad value names the accepted ones. 8da4w defaults: the group size of
    default_group_size(in_features), a 4-bit embedding (groups of 32; the file shrinks, a step reads one row)."""
    if scheme not in SCHEMES:
        raise UnsupportedOption(f"quant scheme {scheme!r} is not supported by the executorch target; "
                                f"supported: {', '.join(SCHEMES)}")
    if scheme == "source":
        return _source_plan(options)
    group = options.get("group_size")
    if group is not None and scheme != "8da4w":
        raise UnsupportedOption(f"group_size applies to 8da4w only (scheme {scheme!r} is per channel)")
    if scheme == "8da4w":
        group = default_group_size(in_features) if group is None else int(group)
        if group not in GROUP_SIZES:
            raise UnsupportedOption(f"group_size {group} is not supported; supported: {GROUP_SIZES}")
    emb, out = options.get("embedding_bits"), options.get("output_bits")
    for name, bits in (("embedding_bits", emb), ("output_bits", out)):
        if bits is not None and int(bits) not in BITS:
            raise UnsupportedOption(f"{name} {bits!r} is not supported; supported: 8, 4 (or leave it unset)")
    if emb is None and scheme == "8da4w" and "embedding_bits" not in options:
        emb = 4
    emb = None if emb is None else int(emb)
    if out is None:
        out = {"fp32": None, "8da8w": 8, "8da4w": 4}[scheme]
    out = int(out) if out is not None else None
    out_group = None if out in (None, 8) else (group or 32)
    kernel = str(options.get("linear_kernel") or "xnnpack")
    if kernel not in LINEAR_KERNELS:
        raise UnsupportedOption(f"linear_kernel {kernel!r} is not supported; supported: {', '.join(LINEAR_KERNELS)}")
    if kernel == "edgekit" and scheme != "8da4w":
        raise UnsupportedOption(f"linear_kernel 'edgekit' runs 8da4w linears only (scheme {scheme!r}); use "
                                "--quant 8da4w or leave linear_kernel unset")
    return QuantPlan(scheme, group, emb, out, out_group, kernel)


def _source_plan(options: dict[str, Any]) -> QuantPlan:
    """The checkpoint fixes the groups and bits; its asymmetric 4-bit grids (GGUF Q4_1) need edgekit's kernel, which
    holds per-group minimums (XNNPACK's int4 GEMM is symmetric)."""
    fixed = sorted(k for k in ("group_size", "embedding_bits", "output_bits") if options.get(k) is not None)
    if fixed:
        raise UnsupportedOption(f"{', '.join(fixed)} cannot be set with quant 'source', which keeps the checkpoint's "
                                "own grids (its groups and bits); use quant '8da4w' to choose them")
    kernel = str(options.get("linear_kernel") or "edgekit")
    if kernel != "edgekit":
        raise UnsupportedOption(f"linear_kernel {kernel!r} cannot run quant 'source': XNNPACK's int4 GEMM has no "
                                "per-group minimums (a GGUF's Q4_1) nor fp16 scales; use linear_kernel 'edgekit' "
                                "(the default with quant 'source') or quant '8da4w'")
    return QuantPlan("source", None, None, None, None, "edgekit")


ACTIVATION_QUANT = "int8_asym_per_token"  # torchao's tag for 8da: int8 dynamic per-token activations
HQQ_ITERS, HQQ_TOL = 20, 1e-5              # torchao's defaults for hqq_scale_only
CHUNK_ELEMENTS = 1 << 20                   # rows per HQQ chunk: ~4 MB of fp32, so the 20 iterations stay in cache
_ROUND_MAGIC = 12582912.0                  # 1.5 * 2**23: x + M - M rounds fp32 |x| < 2**22 to nearest, ties to even


def hqq_scale_only(weight: torch.Tensor, group: int, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchao's `_choose_qparams_and_quantize_scale_only_hqq` (symmetric, scale-only HQQ) over row chunks.

    The same updates in fp32 and the same stop rule (relative scale change < 1e-5, at most 20 iterations), applied to
    chunks of rows with in-place ops: the whole-tensor version streams every fp32 temporary through memory 20 times
    and holds several tensor-sized temporaries (RSS). Rows are independent, so a chunk that converged stops early.
    Values are clamped before rounding (equal for integer bounds), so the add/sub rounding is exact.
    Returns int8 qdata [n, k] and fp32 scales [n, k // group].
    """
    n, k = weight.shape
    eps = torch.finfo(torch.float32).eps
    qabs = max(abs(qmin), abs(qmax))
    qdata = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n, k // group, dtype=torch.float32)
    rows = max(1, CHUNK_ELEMENTS // k)

    def quantize(wg: torch.Tensor, scale: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        torch.div(wg, scale.unsqueeze(-1), out=q)
        return q.clamp_(qmin, qmax).add_(_ROUND_MAGIC).sub_(_ROUND_MAGIC)

    for r0 in range(0, n, rows):
        wg = weight[r0:r0 + rows].to(torch.float32).reshape(-1, k // group, group)
        scale = (wg.abs().amax(dim=2) / qabs).clamp_min(eps)
        prev, q = scale, torch.empty_like(wg)
        for _ in range(HQQ_ITERS):
            quantize(wg, scale, q)
            num = (wg * q).sum(dim=2, dtype=torch.float32)
            den = (q * q).sum(dim=2, dtype=torch.float32)
            scale = torch.where(den > 0, num / den, prev).clamp_min(eps).abs()
            if ((scale - prev).abs() / prev.clamp_min(eps)).max() < HQQ_TOL:
                break
            prev = scale
        qdata[r0:r0 + rows] = quantize(wg, scale, q).reshape(-1, k)
        scales[r0:r0 + rows] = scale
    return qdata, scales


def xnnpack_group_scale(scale: torch.Tensor) -> torch.Tensor:
    """XNNPACK stores the scales of a group-wise (blockwise) quantized linear in bf16 (its node visitor casts them when
    it serializes the delegate). Rounding them here makes the eager reference compute exactly the weights the .pte
    holds, so validation measures the runtime, not a scale-rounding difference that the reference doesn't have."""
    return scale.to(torch.bfloat16).to(torch.float32)


def quantized_weight(weight: torch.Tensor, bits: int, group: int | None, dynamic_activations: bool):
    """The torchao tensor `quantize_` would make (IntxUnpackedToInt8Tensor, hqq_scale_only, symmetric int8 zero
    points), built from hqq_scale_only's chunked qparams. group None: one group per row (per channel). It dequantizes
    to fp32 (the exported graph's dtype) whatever the weight's stored dtype (bf16 is read one chunk at a time)."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor

    group = group or weight.shape[1]
    qmin, qmax = (-8, 7) if bits == 4 else (-128, 127)
    qdata, scale = hqq_scale_only(weight.detach(), group, qmin, qmax)
    if dynamic_activations and group < weight.shape[1]:
        scale = xnnpack_group_scale(scale)
    return IntxUnpackedToInt8Tensor(
        qdata=qdata, scale=scale, zero_point=torch.zeros_like(scale, dtype=torch.int8),
        target_dtype=torch.int4 if bits == 4 else torch.int8, block_size=(1, group), dtype=torch.float32,
        activation_quantization=ACTIVATION_QUANT if dynamic_activations else None)


# id(placeholder parameter) -> (the placeholder, kept alive so its id is never reused; the tensor to quantize)
Sources = dict[int, tuple[nn.Parameter, torch.Tensor]]


def _swap(module: nn.Module, bits: int, group: int | None, dynamic_activations: bool, sources: Sources) -> None:
    weight = sources[id(module.weight)][1] if id(module.weight) in sources else module.weight
    module.weight = nn.Parameter(quantized_weight(weight, bits, group, dynamic_activations), requires_grad=False)


def materialize(decoder: nn.Module, sources: Sources) -> None:
    """Parameters that are still placeholders (see export.build_decoder) become fp32 copies of their stored tensor;
    tied parameters stay tied."""
    made: dict[int, nn.Parameter] = {}
    for module in decoder.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) in sources:
                if id(p) not in made:
                    made[id(p)] = nn.Parameter(sources[id(p)][1].to(torch.float32), requires_grad=False)
                module._parameters[name] = made[id(p)]


def apply(decoder: nn.Module, qp: QuantPlan, sources: Sources | None = None) -> nn.Module:
    """Quantizes `decoder` in place (its own copy: parameters are replaced, the shared tensors are never written).

    `sources` maps id(parameter) -> (parameter, the tensor to quantize instead of it) (a bf16 weight behind an fp32
    placeholder); placeholders left unquantized are materialized in fp32. A tied output layer is quantized on its own
    from the float weight (the embedding's swap leaves it in place)."""
    sources = sources or {}
    if qp.scheme == "fp32" and qp.embedding_bits is None and qp.output_bits is None:
        materialize(decoder, sources)
        return decoder
    from torchao.utils import unwrap_tensor_subclass

    if qp.embedding_bits is not None:
        group = None if qp.embedding_bits == 8 else 32
        _check_groups(decoder.tok_embeddings.weight.shape[1], group, "tok_embeddings")
        _swap(decoder.tok_embeddings, qp.embedding_bits, group, False, sources)
    if qp.scheme != "fp32":
        bits = 4 if qp.scheme == "8da4w" else 8
        linears = [(fqn, m) for fqn, m in decoder.named_modules() if isinstance(m, nn.Linear) and fqn != "output"]
        for fqn, m in linears:
            _check_groups(m.in_features, qp.group_size, fqn)
        for _, m in linears:
            _swap(m, bits, qp.group_size, True, sources)
    if qp.output_bits is not None:
        _check_groups(decoder.output.in_features, qp.output_group_size, "output")
        _swap(decoder.output, qp.output_bits, qp.output_group_size, True, sources)
    materialize(decoder, sources)
    return unwrap_tensor_subclass(decoder)


def _check_groups(in_features: int, group: int | None, fqn: str) -> None:
    if group is not None and in_features % group:
        raise UnsupportedOption(f"{fqn} has {in_features} input features, not a multiple of group_size {group}; "
                                f"choose a group size among {GROUP_SIZES} that divides it")
