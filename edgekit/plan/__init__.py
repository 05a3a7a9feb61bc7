"""`edgekit plan`: for every installed target and scheme, what an export of a model would weigh, what it would hold
at run time at a given context, whether that fits a device, and the decode rate the device's read bandwidth allows;
from the model's shape alone (a config.json or a GGUF header: nothing is loaded or exported)."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.plan.estimate import PlanRow, plan_row

log = logging.getLogger(__name__)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


class PlanError(EdgekitError):
    """A plan was asked for with a value it cannot use (a size, a bandwidth, a context)."""


def parse_size(text: str) -> int:
    """'8GB', '512 MB', '1.5GiB', '3000000000' -> bytes (decimal units; 'iB' binary)."""
    m = _SIZE.match(str(text))
    if not m:
        raise PlanError(f"cannot read {text!r} as a memory size; give a number of bytes or one with a unit, e.g. "
                        "8GB, 512MB, 1.5GiB")
    value, unit, suffix = float(m.group(1)), m.group(2).upper(), (m.group(3) or "")
    base = 1024 if suffix.lower() == "ib" else 1000
    return int(value * base ** " KMGT".index(unit or " "))


@dataclass
class Plan:
    model: dict[str, Any]
    context: int
    device: dict[str, Any]
    rows: list[PlanRow] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)
    logits: str = "last"

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "context": self.context, "logits": self.logits, "device": self.device,
                "rows": [r.as_dict() for r in self.rows], "left_out": self.left_out}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def model_shape(model_or_path: Any) -> tuple[Any, list[tuple[str, str, int, int]] | None, dict[str, Any]]:
    """(ModelConfig, the GGUF's tensors as (name, type, elements, bytes) or None, facts) without reading weights."""
    from edgekit.model.edge_model import EdgeModel

    if isinstance(model_or_path, EdgeModel):
        return model_or_path.config, None, {"name": model_or_path.name}
    from edgekit.model.load import is_gguf_file, resolve

    path = resolve(model_or_path)
    if path.is_file() and is_gguf_file(path):
        import numpy as np

        from edgekit.model.gguf_reader import _read_header, open_gguf

        f = open_gguf(path)
        _, cfg = _read_header(f)
        tensors = [(t.name, getattr(t.tensor_type, "name", str(t.tensor_type)), int(np.prod(t.shape)), int(t.n_bytes))
                   for t in f.tensors]
        return cfg, tensors, {"name": path.name, "source_format": "gguf",
                              "truncated": bool(f.truncated), "file_bytes": path.stat().st_size}
    from edgekit.model.config import ModelConfig

    cfg_file = path / "config.json" if path.is_dir() else path
    if not cfg_file.is_file():
        raise PlanError(f"{path} is neither a GGUF file nor a folder with config.json")
    return ModelConfig.from_hf(json.loads(cfg_file.read_text())), None, {"name": path.name, "source_format": "hf"}


def device_facts(device: str | None, ram: str | None, bandwidth: float | None, history: Any = None
                 ) -> dict[str, Any]:
    """Free memory and read bandwidth to plan for: given ones first, then the device's own facts (its available
    memory) and the bandwidth its latest profile measured (edgekit profile records it); on this host, measured now."""
    facts: dict[str, Any] = {"uri": device or ("local" if ram is None else None)}
    if bandwidth is not None and not bandwidth > 0:
        raise PlanError(f"bandwidth {bandwidth!r} GB/s; give a positive number")
    if ram is not None:
        facts.update(free_bytes=parse_size(ram), free_from="--ram")
    if facts["uri"]:
        from edgekit.profiling.devices import open_device

        dev = open_device(facts["uri"])
        info = dev.facts()
        if "free_bytes" not in facts and (info.get("ram_available_bytes") or info.get("ram_bytes")):
            facts.update(free_bytes=int(info.get("ram_available_bytes") or info["ram_bytes"]),
                         free_from="the device's available memory" if info.get("ram_available_bytes") else
                         "the device's total memory")
        facts["uri"] = dev.uri
    if bandwidth is not None:
        facts.update(read_bandwidth_gbs=float(bandwidth), bandwidth_from="--bandwidth")
    elif facts["uri"]:
        recorded = _recorded_bandwidth(facts["uri"], history)
        if recorded:
            facts.update(read_bandwidth_gbs=recorded["read_bandwidth_gbs"],
                         bandwidth_from=f"profile run #{recorded['history_id']} ({recorded['created']})")
        elif facts["uri"] == "local":
            from edgekit.profiling.runner import read_bandwidth_gbs

            facts.update(read_bandwidth_gbs=read_bandwidth_gbs(), bandwidth_from="measured now on this host")
    return facts


def _recorded_bandwidth(uri: str, history: Any) -> dict[str, Any] | None:
    from edgekit.profiling.history import History

    try:
        return (history or History()).device_figures(uri)
    except Exception as e:  # noqa: BLE001 - an unreadable history only means no recorded figure
        log.warning("profile history unreadable (%s); no recorded bandwidth", e)
        return None


def plan(model_or_path: Any, *, device: str | None = None, ram: str | None = None, context: int = 4096,
         bandwidth: float | None = None, all_logits: bool = False, history: Any = None) -> Plan:
    """Every installed target's schemes for this model, exported with a cache of `context` tokens (see the module
    docstring). all_logits: the export returns every position's logits (what speculative decoding needs; a
    runtime that plans for the longest call then holds that many rows of logits)."""
    from edgekit.targets.base import SOURCE_SCHEME
    from edgekit.targets.registry import targets

    if context < 1:
        raise PlanError(f"context {context}; give a positive number of tokens")
    cfg, tensors, facts = model_shape(model_or_path)
    if context > cfg.max_position_embeddings:
        log.warning("context %d is past the model's max_position_embeddings %d", context, cfg.max_position_embeddings)
    dev = device_facts(device, ram, bandwidth, history)
    out = Plan(model={**facts, "family": cfg.family, "parameters": cfg.num_parameters}, context=context, device=dev,
               logits="all" if all_logits else "last")
    needs = cfg.features()
    for tgt in targets():
        caps = tgt.capabilities
        lacking = sorted(needs - set(caps.model_features)) if caps.model_features is not None else []
        if lacking:
            out.left_out.append({"target": tgt.name, "reason": f"its builder lacks {', '.join(lacking)}"})
            continue
        layouts = {lay.scheme: lay for lay in getattr(caps, "storage", ()) or ()}
        if not layouts:
            out.left_out.append({"target": tgt.name, "reason": "the target declares no storage layouts"})
            continue
        for scheme in caps.quant_schemes:
            lay = layouts.get(scheme)
            if scheme == SOURCE_SCHEME and tensors is None:
                continue   # a float checkpoint has no grids of its own to keep
            if lay is None:
                out.left_out.append({"target": tgt.name, "reason": f"no storage layout declared for {scheme}"})
                continue
            out.rows.append(plan_row(tgt.name, cfg, lay, context, caps.runtime_figures, tensors,
                                     dev.get("free_bytes"), dev.get("read_bandwidth_gbs"), all_logits))
    return out


__all__ = ["Plan", "PlanError", "PlanRow", "parse_size", "plan"]
