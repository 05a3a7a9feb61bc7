"""The eager graph an ONNX export must match: the fp32 Decoder, or for int4 the same Decoder carrying the exact
dequantized weights of the artifact (same packing routine), and with accuracy_level 4 the same int8 quantization of
activations that MatMulNBits applies (per weight block along K, scale = max|a| / 127, round half to even).
So int4 is compared against an int4 reference (tight tolerance), and separately reported against fp32 (top-1).
With linear_kernel 'edgekit' the weights are the tiled layout's (the same codes, bf16 scales) and the activations are
quantized per block the same way (edgekit's LinearQ4 runs MatMulNBits' level-4 arithmetic)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.kernels.q4 import fake_quantize_groups
from edgekit_onnx.quant import QuantPlan, dequantize, dequantize_tiled, pack_blockwise, pack_tiled

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.model.graph import Decoder
    from edgekit.targets.base import TargetSpec


class BlockQuantizedActLinear(nn.Module):
    """y = quant_int8(x, per block along K) @ W.T (+ b): MatMulNBits' accuracy_level 4 arithmetic."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, block_size: int):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quantize_groups(x, self.block_size), self.weight, self.bias)


def _dequantized(weight: torch.Tensor, bits: int, plan: QuantPlan) -> torch.Tensor:
    """The weight as the artifact stores it, dequantized (same packing routine as the export)."""
    if plan.tiled(bits):
        packed, scales, _ = pack_tiled(weight, plan.block_size)
        return dequantize_tiled(packed, scales, plan.block_size, *weight.shape)
    packed, scales = pack_blockwise(weight.detach().float().numpy(), bits, plan.block_size)
    return torch.from_numpy(dequantize(packed, scales, bits, weight.shape[1]))


def _quantized_linear(lin: nn.Linear, bits: int, plan: QuantPlan) -> nn.Module:
    w = _dequantized(lin.weight, bits, plan)
    b = None if lin.bias is None else lin.bias.detach().float()
    if plan.accuracy_level == 4 or plan.tiled(bits):   # edgekit's LinearQ4: always level-4 activations
        return BlockQuantizedActLinear(w, b, plan.block_size)
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    out.weight = nn.Parameter(w, requires_grad=False)
    if b is not None:
        out.bias = nn.Parameter(b, requires_grad=False)
    return out


class GridLinear(nn.Module):
    """What a quant 'source' linear computes: MatMulNBits on the file's codes (its activations rounded per block at
    accuracy_level 4) plus the asymmetric grids' per-group correction on the unrounded group sums of x."""

    def __init__(self, main: torch.Tensor, correction: torch.Tensor | None, bias: torch.Tensor | None, group: int,
                 int8_activations: bool):
        super().__init__()
        self.main = nn.Parameter(main, requires_grad=False)
        self.correction = None if correction is None else nn.Parameter(correction, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)
        self.group, self.int8_activations = group, int8_activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = fake_quantize_groups(x, self.group) if self.int8_activations else x
        y = F.linear(xq, self.main, self.bias)
        if self.correction is not None:
            y = y + F.linear(x.reshape(*x.shape[:-1], -1, self.group).sum(-1), self.correction)
        return y


def source_reference(dec: Decoder, model: EdgeModel, plan: QuantPlan, grids: dict | None = None) -> Decoder:
    """The decoder with every linear the export keeps on the file's grid swapped for its GridLinear (the rows of
    its fused grid: the same zero points, group and correction as the artifact). `grids`: those of quantizer
    'search' / 'gptq' (default: the checkpoint's own, quant 'source')."""
    from edgekit_onnx.builder import grid_accuracy_level
    from edgekit_onnx.source_grid import fused_parts, grids_for

    if grids is None:
        grids, _ = grids_for(model.config, model.source_quant)
    owners = {"attention": ("wq", "wk", "wv", "wo"), "feed_forward": ("w1", "w2", "w3")}
    for name, parts in fused_parts(model.config).items():
        if name not in grids or name == "/model/embed_tokens":
            continue
        grid, row = grids[name], 0
        kernel = plan.edgekit_kernel and grid.bits == 4   # LinearQ4: fp16 grid, int8 activations per group
        main = grid.kernel_weight() if kernel else grid.main_weight()
        corr = None if grid.correction is None or kernel else torch.from_numpy(grid.correction)
        k = grid.in_features   # codes zero-padded to whole groups beyond it (quantizer 'gptq' / 'search')
        for part in parts:
            n = (model.source_quant[part] if plan.scheme == "source" else model.weights[part]).shape[0]
            linear = _decoder_linear(dec, part, owners)
            rows = slice(row, row + n)
            row += n
            bias = getattr(linear, "bias", None)
            new = GridLinear(main[rows, :k].contiguous(), None if corr is None else corr[rows], bias, grid.group,
                             kernel or grid_accuracy_level(grid, plan) == 4)
            _set_decoder_linear(dec, part, new)
    return dec


def _decoder_linear(dec: Decoder, canonical: str, owners: dict) -> nn.Module:
    if canonical in ("tok_embeddings.weight", "output.weight"):
        return dec.output
    _, i, owner, lin, _ = canonical.split(".")
    return getattr(getattr(dec.layers[int(i)], owner), lin)


def _set_decoder_linear(dec: Decoder, canonical: str, module: nn.Module) -> None:
    if canonical in ("tok_embeddings.weight", "output.weight"):
        dec.output = module   # a tied head is untied here; the embedding keeps the exact float table
        return
    _, i, owner, lin, _ = canonical.split(".")
    setattr(getattr(dec.layers[int(i)], owner), lin, module)


def quantized_reference(dec: Decoder, plan: QuantPlan) -> Decoder:
    """Swap the decoder's linears / embedding for their dequantized twins (on this decoder copy only)."""
    if plan.linear_bits is not None:
        for layer in dec.layers:
            att, ffn = layer.attention, layer.feed_forward
            for owner, names in ((att, ("wq", "wk", "wv", "wo")), (ffn, ("w1", "w2", "w3"))):
                for n in names:
                    setattr(owner, n, _quantized_linear(getattr(owner, n), plan.linear_bits, plan))
    if plan.output_bits is not None:
        dec.output = _quantized_linear(dec.output, plan.output_bits, plan)   # also unties a tied head
    if plan.embedding_bits is not None:
        table = _dequantized(dec.tok_embeddings.weight, plan.embedding_bits, plan)
        dec.tok_embeddings = nn.Embedding.from_pretrained(table, freeze=True)
    return dec


def build_reference(model: EdgeModel, spec: TargetSpec, plan: QuantPlan) -> Decoder:
    dtype = torch.float16 if plan.float_dtype == "fp16" else torch.float32
    dec = model.decoder(spec.max_seq_len, spec.last_logits_only, dtype=dtype)
    if spec.kv_cache == "int8":
        from edgekit.kernels import use_int8_kv_cache

        use_int8_kv_cache(dec)
    if plan.scheme == "source":
        return source_reference(dec, model, plan)
    dec = quantized_reference(dec, plan)
    if plan.quantizer != "rtn":
        from edgekit_onnx.quantizer import quantizer_grids

        grids = quantizer_grids(model, plan)[0]
        dec = source_reference(dec, model, plan, grids)
        head = grids.get("/lm_head")
        if head is not None and model.config.tie_word_embeddings and head.correction is None and head.default_zero:
            # the artifact's table gathers from the output layer's codes (builder._embedding): so does the reference
            table = head.main_weight()[:, :head.in_features].contiguous()
            dec.tok_embeddings = nn.Embedding.from_pretrained(table, freeze=True)
    return dec
