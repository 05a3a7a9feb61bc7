"""What XNNPACK took and what stayed in portable kernels, after to_edge_transform_and_lower."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

GEMM_OPS = ("linear", "mm", "addmm", "bmm", "matmul")


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", str(target))
    return name.removeprefix("aten.").split(".")[0]


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        return path.removeprefix("L['self'].").removeprefix("L__self__.") or node.name
    return node.name


def delegation_summary(ep: Any) -> dict[str, Any]:
    """Counts of delegated / portable nodes per op; every linear left outside XNNPACK is logged as a WARNING."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(ep.graph_module)
    portable: dict[str, int] = {}
    undelegated_linears: list[str] = []
    attention_gemms: set[str] = set()
    for node in ep.graph_module.graph.nodes:
        if node.op != "call_function" or "executorch_call_delegate" in str(node.target) or node.target.__name__ == "getitem":
            continue
        op = _op_name(node.target)
        portable[op] = portable.get(op, 0) + 1
        if op in GEMM_OPS:
            path = _module_path(node)
            # q.k and p.v of attention written as plain ops (a sliding layer's ring cache): expected, not a weight
            (attention_gemms.add if path.endswith(".attend") else undelegated_linears.append)(path)
    for path in undelegated_linears:
        log.warning("linear %s was not delegated to XNNPACK; it runs in a portable kernel (slow)", path)
    if attention_gemms:
        log.info("attention products of %d layers run in portable kernels (plain-op attention, e.g. sliding-window "
                 "rings): %s", len(attention_gemms), ", ".join(sorted(attention_gemms)))
    delegated = {k: v.delegated for k, v in info.delegation_by_operator.items() if v.delegated}
    summary = {"delegated_subgraphs": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
               "non_delegated_nodes": info.num_non_delegated_nodes, "delegated_ops": dict(sorted(delegated.items())),
               "portable_ops": dict(sorted(portable.items())), "undelegated_linears": undelegated_linears,
               "portable_attention": sorted(attention_gemms)}
    log.info("XNNPACK took %d nodes in %d subgraphs; portable ops: %s", summary["delegated_nodes"],
             summary["delegated_subgraphs"], ", ".join(f"{k}×{v}" for k, v in summary["portable_ops"].items()) or "none")
    return summary
