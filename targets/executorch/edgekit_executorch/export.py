"""Decoder -> .pte: quantize a fresh decoder copy, torch.export with a dynamic prefill length, lower to XNNPACK,
serialize. Heavy module: imported only when an export runs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekit import progress
from edgekit.errors import ExportError, UnsupportedOption
from edgekit.model import pages
from edgekit_executorch import quantize as quant
from edgekit_executorch.attention import resolve_attention
from edgekit_executorch.delegation import delegation_summary
from edgekit_executorch.memory import release_freed_memory

if TYPE_CHECKING:
    from torch import nn

    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import TargetSpec

log = logging.getLogger(__name__)
PTE_NAME = "model.pte"


def build_decoder(model: EdgeModel, spec: TargetSpec, for_export: bool, report=None) -> nn.Module:
    """A fresh decoder copy, quantized per the spec; for export its attention uses ExecuTorch's LLM ops.

    reference() calls this with for_export=False: the same quantized weights, edgekit's eager attention.
    report: quant 'source' records in it what the file's grids became (source_q4.SourceReport).
    """
    qp = quant.plan(spec.quant, spec.options, quant.linear_in_features(model.config))
    decoder, sources = decoder_without_float_copy(model, spec)
    if spec.kv_cache == "int8":
        from edgekit.kernels import use_int8_kv_cache  # swaps every attention.attend for the int8 one

        use_int8_kv_cache(decoder)
    if qp.scheme == "source":
        return build_source_decoder(model, spec, qp, decoder, sources, for_export, report)
    with torch.no_grad():
        quant.apply(decoder, qp, sources)
    if not for_export:   # the eager reference: each weight dequantized once (torchao re-makes it on every call)
        from edgekit_executorch.eager_reference import dequantize_once

        dequantize_once(decoder)
    if for_export:
        # the checkpoint's pages were read to quantize; give them back (0.5B bf16: 1 GB of the lowering peak). A float
        # weight the decoder still shares faults back in from the file when lowering reads it
        released = pages.release(model.weights.values())
        log.debug("released %.0f MB of checkpoint pages after quantization", released / 1e6)
    attention = resolve_attention(spec.options, spec.kv_cache, qp.linear_kernel)
    if for_export and attention in ("llama", "edgekit"):
        from edgekit_executorch.attention import use_custom_sdpa

        use_custom_sdpa(decoder, attention)
    if for_export and attention != "graph":
        from edgekit_executorch.attention import use_custom_sdpa_rings

        use_custom_sdpa_rings(decoder)
    if for_export and qp.linear_kernel == "edgekit":
        from edgekit_executorch.kernels.fused_block import use_fused_q4_blocks

        log.debug("edgekit int4 kernels: %s", use_fused_q4_blocks(decoder))
    elif for_export and attention != "graph":
        from edgekit_executorch.attention import use_linear_mean_norms, use_linear_rope

        use_linear_mean_norms(decoder)
        use_linear_rope(decoder)
    return decoder.eval()


def build_source_decoder(model: EdgeModel, spec: TargetSpec, qp: quant.QuantPlan, decoder: nn.Module,
                         sources: quant.Sources, for_export: bool, report=None) -> nn.Module:
    """build_decoder for quant 'source' (source_q4.py): the file's grids; `report` (a SourceReport) collects what
    was kept, left float and re-quantized."""
    from torchao.utils import unwrap_tensor_subclass

    from edgekit_executorch.source_decoder import quantize_tables, use_reference_grids, use_source_kernels
    from edgekit_executorch.source_q4 import SourceReport

    report = SourceReport() if report is None else report
    with torch.no_grad():
        quantize_tables(decoder, model, report)
        quant.materialize(decoder, sources)
    if not for_export:
        from edgekit_executorch.eager_reference import dequantize_once

        use_reference_grids(decoder, model)
        dequantize_once(decoder)
        return decoder.eval()
    attention = resolve_attention(spec.options, spec.kv_cache, qp.linear_kernel)
    if attention in ("llama", "edgekit"):
        from edgekit_executorch.attention import use_custom_sdpa

        use_custom_sdpa(decoder, attention)
    if attention != "graph":
        from edgekit_executorch.attention import use_custom_sdpa_rings

        use_custom_sdpa_rings(decoder)
    with torch.no_grad():
        log.debug("quant 'source' kernels: %s", use_source_kernels(decoder, model, report))
    pages.release(model.weights.values())
    return unwrap_tensor_subclass(decoder).eval()


def decoder_without_float_copy(model: EdgeModel, spec: TargetSpec) -> tuple[nn.Module, quant.Sources]:
    """model.decoder() in fp32, except that a weight matrix stored in another float dtype (a model loaded in bf16) is
    not converted up front: its parameter is a zero-stride fp32 placeholder of its shape, and the returned map
    (id(placeholder) -> (placeholder, stored tensor)) lets quantization read the stored tensor chunk by chunk. A 0.5B model then never
    holds its weights in fp32 (2.5 GB) beside the quantized copy; quant.apply() materializes what stays float."""
    from edgekit.model.graph import build_decoder as build_float_decoder

    stored = {k: v for k, v in model.weights.items() if v.dim() == 2 and v.dtype != torch.float32}
    weights = {k: (torch.zeros((), dtype=torch.float32).expand(v.shape) if k in stored else v)
               for k, v in model.weights.items()}
    decoder = build_float_decoder(model.config, weights, spec.max_seq_len, torch.float32, spec.last_logits_only)
    params = dict(decoder.named_parameters(remove_duplicate=False))
    return decoder, {id(params[k]): (params[k], v) for k, v in stored.items() if k in params}


def constant_methods(model: EdgeModel, spec: TargetSpec) -> dict[str, Any]:
    """The metadata methods ExecuTorch's LLM runners (llama_main, Android LlmModule) read from a .pte."""
    cfg = model.config
    tok = model._tokenizer
    bos = tok.bos_id if tok is not None and tok.bos_id is not None else cfg.bos_token_id
    return {
        "get_max_seq_len": spec.max_seq_len,
        "get_max_context_len": spec.max_seq_len,
        "get_vocab_size": cfg.vocab_size,
        "get_bos_id": int(bos) if bos is not None else -1,
        "get_eos_ids": [int(i) for i in model.stop_ids],
        "get_n_layers": cfg.num_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False,
        "enable_dynamic_shape": True,
    }


def capture(decoder: nn.Module, max_seq_len: int) -> torch.export.ExportedProgram:
    """torch.export with one dynamic length shared by tokens[1,T] and input_pos[T] (T up to max_seq_len - 1)."""
    seq = torch.export.Dim("seq_len", min=1, max=max_seq_len - 1)
    t = min(3, max_seq_len - 1)
    example = (torch.zeros(1, t, dtype=torch.long), torch.arange(t, dtype=torch.long))
    with torch.no_grad():
        # no run_decompositions here: to_edge_transform_and_lower starts with run_decompositions({}) itself, and each
        # pass retraces the whole graph (a third of capture + lower on a 24-layer model)
        return torch.export.export(decoder, example, dynamic_shapes=({1: seq}, {0: seq}), strict=False)


def has_linears(ep: torch.export.ExportedProgram) -> bool:
    """Whether a matrix product is left for XNNPACK (e.g. an 8-bit output layer beside edgekit's int4 kernels)."""
    products = {torch.ops.aten.linear.default, torch.ops.aten.mm.default, torch.ops.aten.addmm.default,
                torch.ops.aten.matmul.default, torch.ops.aten.bmm.default}
    return any(n.op == "call_function" and n.target in products for n in ep.graph.nodes)


def lower(ep: torch.export.ExportedProgram, methods: dict[str, Any], delegate: bool = True):
    """to_edge + XNNPACK lowering. delegate=False (edgekit's int4 kernels do the linears): nothing is left that
    XNNPACK would do better than a view, and a lone delegated view costs a delegate call per use."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgekit_executorch.torchao_fakes import shape_only_fakes
    from edgekit_executorch.xnnpack_packing import lean_int4_packing
    from edgekit_executorch.xnnpack_passes import only_needed_passes

    with only_needed_passes(), shape_only_fakes(), lean_int4_packing():
        return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()] if delegate else [],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False),
                                           constant_methods=methods)


def to_executorch(edge):
    import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed::embedding_* out variants)
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    return edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True,
        do_quant_fusion_and_const_prop=True,   # fuses dequant + embedding into quantized embedding kernels
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),  # plans activations for the largest T only
    ))


def export_pte(model: EdgeModel, spec: TargetSpec, out: Path) -> dict[str, Any]:
    """Writes out/model.pte; returns the metadata to record (scheme, delegation summary, sizes)."""
    stages = progress.current()
    qp = quant.plan(spec.quant, spec.options, quant.linear_in_features(model.config))
    libraries = custom_op_libraries(spec, qp, out)   # compiled (or taken from the cache) before any heavy work
    report = None
    if qp.scheme == "source":
        from edgekit_executorch.source_q4 import SourceReport

        report = SourceReport()
    with stages.stage("quantize"):
        decoder = build_decoder(model, spec, for_export=True, report=report)
        attention_layers = count_cache_attention(decoder)
    with stages.stage("capture"):
        try:
            ep = capture(decoder, spec.max_seq_len)
        except Exception as e:  # a graph torch.export cannot trace is an export failure, say which spec
            raise ExportError(f"torch.export of {model.name} ({spec.quant}, max_seq_len {spec.max_seq_len}) "
                              f"failed: {e}") from e
    del decoder
    with stages.stage("lower"):
        edge = lower(ep, constant_methods(model, spec), delegate=qp.linear_kernel != "edgekit" or has_linears(ep))
        del ep
        summary = delegation_summary(edge.exported_program())
        release_freed_memory()   # the unlowered program's int8 weights and the partitioner's tables (peak RSS)
    with stages.stage("serialize"):
        prog = to_executorch(edge)
        del edge
        with (out / PTE_NAME).open("wb") as f:
            prog.write_to_file(f)
    extra = {} if report is None else {"source_grids": report.as_metadata()}
    return {"max_seq_len": spec.max_seq_len, "last_logits_only": spec.last_logits_only,
            "quantization": qp.describe(), **extra, "delegation": summary,
            "attention": _attention_kind(spec, qp, attention_layers),
            "pte_bytes": (out / PTE_NAME).stat().st_size,
            "constant_methods": constant_methods(model, spec),
            "custom_op_libraries": libraries}


CACHE_ATTENTION_KIND = "edgekit::qkv_cache_attention (fp32 cache, written by the op)"
ATTENTION_KINDS = {"int8": "edgekit int8 kv cache (edgekit::attention)",
                   "edgekit": "edgekit::attention (fp32 cache) + llama::update_cache",
                   "llama": "llama::custom_sdpa+update_cache",
                   "graph": "edgekit"}


def count_cache_attention(decoder: nn.Module) -> tuple[int, int]:
    """(layers whose attention runs as edgekit::qkv_cache_attention, all layers)."""
    return sum(bool(getattr(layer, "cache_attention", False)) for layer in decoder.layers), len(decoder.layers)


def _attention_kind(spec: TargetSpec, qp: quant.QuantPlan, layers: tuple[int, int] = (0, 0)) -> str:
    kind = ATTENTION_KINDS[resolve_attention(spec.options, spec.kv_cache, qp.linear_kernel)]
    fused, total = layers
    if fused == 0:
        return kind
    return CACHE_ATTENTION_KIND if fused == total else f"{CACHE_ATTENTION_KIND} in {fused} of {total} layers, else {kind}"


KERNELS_DIR = "kernels"


def custom_op_libraries(spec: TargetSpec, qp: quant.QuantPlan, out: Path) -> list[str]:
    """Kernel libraries the runtime must load before this .pte: edgekit's kernels, for the int8 KV cache,
    the int4 linears (linear_kernel 'edgekit') or the attention (attention_kernel 'edgekit'). Each is copied into
    out/kernels/ and named by that folder-relative path, so the artifact (and a bundle of it) runs on a machine that
    never built them, from the copy its hashes cover."""
    import shutil

    if qp.linear_kernel != "edgekit" and resolve_attention(spec.options, spec.kv_cache, qp.linear_kernel) not in (
            "int8", "edgekit"):
        return []
    try:
        from edgekit_executorch.kernels import runtime_libraries  # provided by the kernels package
    except ImportError as e:
        raise UnsupportedOption("kv_cache 'int8', linear_kernel 'edgekit' and attention_kernel 'edgekit' need "
                                "edgekit_executorch.kernels.runtime_libraries() (edgekit's kernel library), which is "
                                "not available") from e
    (out / KERNELS_DIR).mkdir(parents=True, exist_ok=True)
    names = []
    for lib in runtime_libraries():
        shutil.copyfile(lib, out / KERNELS_DIR / lib.name)
        names.append(f"{KERNELS_DIR}/{lib.name}")
    return names
