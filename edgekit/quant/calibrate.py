"""Calibrated quantization of a float EdgeModel: the eager decoder run layer by layer on calibration text, each
linear's input Hessian (X^T X) collected with forward hooks, then GPTQ (edgekit.quant.gptq) on it.

Sequential, as GPTQ's reference implementation: layer i's Hessians come from activations that already went through
the quantized layers 0 .. i-1, so each layer corrects for the error of those before it. Linears reading the same
input share one Hessian (q|k|v; gate|up), and are quantized as one matrix (rows are independent given H).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgekit.errors import CalibrationError
from edgekit.evaldata import EvalText
from edgekit.quant.gptq import DAMP, gptq_quantize
from edgekit.quant.tensor import QuantizedTensor

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.quant.scheme import WeightGrid

log = logging.getLogger(__name__)
WINDOW = 512          # tokens per calibration forward (the shipped text is 3,944 SmolLM2 tokens: eight windows)
MIN_TOKENS = 16
# (module attribute of the linear whose input the group shares, the linears quantized together on that input)
GROUPS = (("attention", "wq", ("wq", "wk", "wv")), ("attention", "wo", ("wo",)),
          ("feed_forward", "w1", ("w1", "w3")), ("feed_forward", "w2", ("w2",)))


# a calibration text is an EvalText (id: a file path or the shipped text's id, the text, its sha256)
Calibration = EvalText


def calibration_for(path: str | Path | None) -> Calibration:
    """The shipped calibration text (None), or a user's UTF-8 text file."""
    if path is None or str(path) == "":
        from edgekit.evaldata import calibration_text

        t = calibration_text()
        return Calibration(t.id, t.text)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"calibration={str(path)!r} cannot be read ({type(e).__name__}: {e}); accepted: a "
                               "readable UTF-8 text file, or no calibration option for the shipped text") from None
    if not text.strip():
        raise CalibrationError(f"calibration={str(path)!r} is empty; accepted: a UTF-8 text file with some prose")
    return Calibration(str(path), text)


def gptq_weights(model: EdgeModel, grid: WeightGrid, calibration: Calibration | None = None, *,
                 include_output: bool = False, act_order: bool = True, damp: float = DAMP, refine: bool = True,
                 window: int = WINDOW, threads: int | None = 1) -> dict[str, QuantizedTensor]:
    """{canonical name: QuantizedTensor} for every linear of every layer (and the output layer with
    include_output: the tied embedding's matrix when tied), on `grid` (bits, group size, symmetric).
    `damp`, `refine`: as edgekit.quant.gptq.gptq_quantize takes them.
    `threads`: torch threads while it runs (None: leave torch's setting); 1 by default because the column sweep's
    small kernels ran 11x slower on 2 contended OpenMP threads than on 1 here (0.63 s vs 7.1 s for a 3072 x 576)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _gptq_weights(model, grid, calibration, include_output,
                             {"act_order": act_order, "damp": damp, "refine": refine}, window)
    finally:
        torch.set_num_threads(previous)


def _gptq_weights(model: EdgeModel, grid: WeightGrid, calibration: Calibration | None, include_output: bool,
                  opts: dict, window: int) -> dict[str, QuantizedTensor]:
    cal = calibration or calibration_for(None)
    cfg = model.config
    tokens = model.tokenizer.encode(cal.text)
    if len(tokens) < MIN_TOKENS:
        raise CalibrationError(f"calibration text {cal.id!r} has {len(tokens)} tokens; accepted: at least {MIN_TOKENS}")
    window = min(window, model.default_max_seq_len or window, len(tokens))
    dec = model.decoder(window, last_logits_only=False, dtype=torch.float32)
    out: dict[str, QuantizedTensor] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        states = [_embed(dec, torch.tensor(tokens[i:i + window])) for i in range(0, len(tokens), window)]
        for i, layer in enumerate(dec.layers):
            hessians = _collect(layer, states, dec)
            for owner, first, members in GROUPS:
                mod = getattr(layer, owner)
                names = [f"layers.{i}.{owner}.{m}.weight" for m in members]
                out.update(_quantize_group(mod, members, names, hessians[f"{owner}.{first}"], grid, opts))
            states = [(_run_layer(layer, x, dec), pos) for x, pos in states]
            log.info("gptq: layer %d/%d done (%.1f s)", i + 1, cfg.num_layers, time.perf_counter() - t0)
        if include_output:
            h = sum(_gram(dec.norm(x)) for x, _ in states)
            name = "tok_embeddings.weight" if cfg.tie_word_embeddings else "output.weight"
            out[name] = _gptq(dec.output.weight, h, grid, opts)
    return out


def _embed(dec: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return dec.tok_embeddings(tokens[None]), torch.arange(tokens.shape[0])


def _run_layer(layer: nn.Module, x: torch.Tensor, dec: nn.Module) -> torch.Tensor:
    """One Block on one window, as Decoder.forward calls it (positions from 0: each window is its own sequence)."""
    x, pos = x if isinstance(x, tuple) else (x, torch.arange(x.shape[1]))
    cos, sin = dec.rope_cos[pos][None, :, None, :], dec.rope_sin[pos][None, :, None, :]
    return layer(x, pos, cos, sin, dec.causal_mask[pos])


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1]).double()
    return x.T @ x


def _collect(layer: nn.Module, states: list, dec: nn.Module) -> dict[str, torch.Tensor]:
    """Sum of x x^T of each group's input over every window (forward hooks on the group's first linear)."""
    hessians: dict[str, torch.Tensor] = {}
    handles = []
    for owner, first, _ in GROUPS:
        key = f"{owner}.{first}"

        def hook(_mod, inputs, _out, key=key) -> None:
            g = _gram(inputs[0])
            hessians[key] = hessians[key] + g if key in hessians else g

        handles.append(getattr(getattr(layer, owner), first).register_forward_hook(hook))
    try:
        for state in states:
            _run_layer(layer, state, dec)
    finally:
        for h in handles:
            h.remove()
    return hessians


def _gptq(w: torch.Tensor, h: torch.Tensor, grid: WeightGrid, opts: dict) -> QuantizedTensor:
    """`opts`: gptq_quantize's keyword options (act_order, damp, refine)."""
    return gptq_quantize(w, h, grid.bits, grid.group_size or w.shape[1], grid.symmetric, **opts)


def _quantize_group(owner: nn.Module, members: tuple[str, ...], names: list[str], h: torch.Tensor,
                    grid: WeightGrid, opts: dict) -> dict[str, QuantizedTensor]:
    """Quantize the members as one [sum N, K] matrix, split the rows back, and give the decoder copy the
    dequantized weights (new tensors: the model's own stay untouched) so later layers see the quantized ones."""
    linears = [getattr(owner, m) for m in members]
    q = _gptq(torch.cat([lin.weight for lin in linears]), h, grid, opts)
    parts, row = {}, 0
    for name, m, lin in zip(names, members, linears, strict=True):
        n, k = lin.weight.shape
        part = q.rows(torch.arange(row, row + n))
        row += n
        parts[name] = QuantizedTensor(part.codes, part.scales, part.mins, part.bits, part.group_size, "gptq")
        new = nn.Linear(k, n, bias=lin.bias is not None)
        new.weight = nn.Parameter(part.dequantize()[:, :k].contiguous(), requires_grad=False)
        if lin.bias is not None:
            new.bias = lin.bias
        setattr(owner, m, new)
    return parts
