"""Scheme names shared by every target: a name in edgekit.quant.registry means one thing wherever it is accepted.

A target carries a shared scheme in one of its own formats, with the options that give it the scheme's meaning
(ONNX holds 'w4_g32' as its int4 MatMulNBits at block 32, float activations, searched scales). `bind` turns the
name a user asked for into what the target's exporter reads, and a record of it for the artifact's metadata and the
bundle manifest: the scheme (grids, activations, overrides), the options the scheme set, and every option the user
changed on top (an override is allowed, and written down, never silent). A target-specific name (one the registry
does not know) passes through as the target's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.errors import UnsupportedOption

if TYPE_CHECKING:
    from edgekit.targets.base import Capabilities


@dataclass(frozen=True)
class SchemeBinding:
    """How a target holds the shared scheme `scheme`: its own quant `quant` with `options` (defaults a user's
    options may change, recorded as overrides)."""

    scheme: str
    quant: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Bound:
    quant: str                       # the target's own quant name, what its exporter reads
    options: dict[str, Any]          # the scheme's options with the user's on top
    record: dict[str, Any]           # metadata["quant_scheme"]


def bindings(caps: Capabilities) -> tuple[SchemeBinding, ...]:
    """The target's shared schemes: its explicit bindings, then each registered name it lists without one, held as
    its own quant of that name with no options (a plugin that lists 'fp32' claims the registry's fp32)."""
    explicit = tuple(caps.scheme_bindings)
    named = {b.scheme for b in explicit}
    return explicit + tuple(SchemeBinding(q, q) for q in caps.quant_schemes if q not in named and _is_registered(q))


def accepted(caps: Capabilities) -> tuple[str, ...]:
    """Every quant name the target takes: its shared schemes, then its own names that are not shared ones."""
    shared = tuple(b.scheme for b in bindings(caps))
    return shared + tuple(q for q in caps.quant_schemes if q not in shared)


def binding_for(caps: Capabilities, quant: str) -> SchemeBinding | None:
    return next((b for b in bindings(caps) if b.scheme == quant), None)


def bind(target_name: str, caps: Capabilities, quant: str, options: dict[str, Any]) -> Bound:
    """What `quant` (a shared scheme or the target's own name) means on this target; UnsupportedOption, naming
    every name the target accepts, when it holds neither."""
    from edgekit.quant.registry import get_scheme

    b = binding_for(caps, quant)
    if b is None:
        if quant in caps.quant_schemes:
            return Bound(quant, dict(options), {"name": quant, "target_quant": quant, "scheme": None,
                                                "description": f"{target_name}'s own scheme", "options": {},
                                                "overrides": {}})
        shared = ""
        if _is_registered(quant):
            shared = f" ({quant!r} is a shared scheme: {get_scheme(quant).description})"
        raise UnsupportedOption(f"quant scheme {quant!r} is not supported by target {target_name!r}{shared}; "
                                f"supported: {', '.join(accepted(caps))}")
    fixed = dict(b.options)
    merged = {**fixed, **options}
    overrides = {k: v for k, v in options.items() if k in fixed and fixed[k] != v}
    scheme = get_scheme(b.scheme)
    return Bound(b.quant, merged, {"name": b.scheme, "target_quant": b.quant, "scheme": scheme.to_dict(),
                                   "description": scheme.description, "options": fixed, "overrides": overrides})


def check_all(targets: list[Any], quant: str) -> None:
    """Before any export of several targets with one scheme: UnsupportedOption naming each target that cannot hold
    `quant` and what it can."""
    missing = [t for t in targets if quant not in accepted(t.capabilities)]
    if missing:
        lines = "; ".join(f"{t.name}: {', '.join(accepted(t.capabilities))}" for t in missing)
        raise UnsupportedOption(f"quant scheme {quant!r} is not supported by {', '.join(t.name for t in missing)} "
                                f"(accepted there: {lines}); leave --quant unset for each target's default, or "
                                "pick a scheme every target lists (`edgekit targets`)")


def _is_registered(name: str) -> bool:
    from edgekit.quant.registry import scheme_names

    return name in scheme_names()
