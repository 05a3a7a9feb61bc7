"""QuantScheme: what a scheme name means, the same on every target that can hold it.

A scheme gives the grid of the linear layers (bits, group size, symmetric or with a minimum, RTN or scale search),
how activations are quantized, overrides for the embedding, the output layer and tensors chosen by name pattern,
and whether a GGUF's own grids are kept. `resolve(name, has_source)` says what one weight becomes. Targets map the
result onto their formats; a target that cannot hold a scheme says so by name (its capabilities list the names).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any, Literal

from edgekit.errors import QuantSchemeError

ActivationMode = Literal["float", "int8_token", "int8_group"]
ACTIVATION_MODES: tuple[str, ...] = ("float", "int8_token", "int8_group")
FLOAT_DTYPES: tuple[str, ...] = ("fp32", "fp16")
EMBEDDING = "tok_embeddings.weight"
OUTPUT = "output.weight"


@dataclass(frozen=True)
class WeightGrid:
    """One tensor's grid: `bits`-bit codes, one scale (and minimum unless symmetric) per `group_size` weights of a
    row; group_size None = one group per row (per channel)."""

    bits: int
    group_size: int | None = 32
    symmetric: bool = True
    search: bool = False        # per-group scale search instead of round-to-nearest (edgekit.quant.rtn)

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise QuantSchemeError(f"weight bits {self.bits!r} is not supported; accepted: 2..8")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size <= 0):
            raise QuantSchemeError(f"group size {self.group_size!r} is not valid; accepted: a positive int, or None "
                                   "for one group per row")

    def group_for(self, row_length: int) -> int:
        """The group size on a row of `row_length` weights (QuantSchemeError when it does not divide the row)."""
        g = self.group_size or row_length
        if row_length % g:
            raise QuantSchemeError(f"group size {g} does not divide a row of {row_length} weights")
        return g


Float = Literal["float"]
Grid = WeightGrid | Float                  # "float": the tensor stays float (at the scheme's float_dtype)
Resolved = WeightGrid | Literal["float", "source"]


@dataclass(frozen=True)
class QuantScheme:
    name: str
    weights: Grid = "float"                      # every 2-D weight not overridden below
    activations: ActivationMode = "float"
    activation_group_size: int = 32              # int8_group: one activation scale per this many inputs
    embedding: Grid | None = None                # None: as `weights`
    output: Grid | None = None                   # the output layer (the tied embedding's matrix when tied); None: as `weights`
    overrides: tuple[tuple[str, Grid], ...] = () # (fnmatch pattern on canonical names, grid); the first match wins
    keep_source: bool = False                    # a GGUF's own quantized tensors are kept as stored
    float_dtype: str = "fp32"                    # the dtype of what stays float
    description: str = ""

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATION_MODES:
            raise QuantSchemeError(f"activation mode {self.activations!r} is not known; accepted: "
                                   f"{', '.join(ACTIVATION_MODES)}")
        if not isinstance(self.activation_group_size, int) or self.activation_group_size <= 0:
            raise QuantSchemeError(f"activation group size {self.activation_group_size!r} is not a positive int")
        if self.float_dtype not in FLOAT_DTYPES:
            raise QuantSchemeError(f"float dtype {self.float_dtype!r} is not supported; accepted: "
                                   f"{', '.join(FLOAT_DTYPES)}")
        grids = [("weights", self.weights), ("embedding", self.embedding), ("output", self.output)]
        grids += [(f"override {p!r}", g) for p, g in self.overrides]
        for what, grid in grids:
            if not (grid is None and what in ("embedding", "output")) and not isinstance(grid, WeightGrid) \
                    and grid != "float":
                raise QuantSchemeError(f"{self.name}: {what} grid {grid!r} is not valid; accepted: a WeightGrid or "
                                       "'float'")
        for pattern, _ in self.overrides:
            if not isinstance(pattern, str) or not pattern:
                raise QuantSchemeError(f"{self.name}: override pattern {pattern!r} is not a non-empty string")

    def resolve(self, name: str, has_source: bool = False) -> Resolved:
        """What the 2-D weight `name` (canonical) becomes: a WeightGrid, "float", or "source" (keep the GGUF's
        tensor as stored). Explicit choices (a pattern, a set embedding/output grid) beat keep_source."""
        for pattern, grid in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                return grid
        explicit = self.embedding if name == EMBEDDING else self.output if name == OUTPUT else None
        if explicit is not None:
            return explicit
        if self.keep_source and has_source:
            return "source"
        return self.weights

    @property
    def quantizes_weights(self) -> bool:
        grids = [self.weights, self.embedding, self.output, *(g for _, g in self.overrides)]
        return self.keep_source or any(isinstance(g, WeightGrid) for g in grids)

    def with_overrides(self, **changes: Any) -> QuantScheme:
        """A copy with fields changed (e.g. output=WeightGrid(8, None)); validated like a new scheme."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for artifact metadata and bundle manifests."""
        def grid(g: Grid | None) -> Any:
            return dataclasses.asdict(g) if isinstance(g, WeightGrid) else g

        return {"name": self.name, "weights": grid(self.weights), "activations": self.activations,
                "activation_group_size": self.activation_group_size, "embedding": grid(self.embedding),
                "output": grid(self.output), "overrides": [[p, grid(g)] for p, g in self.overrides],
                "keep_source": self.keep_source, "float_dtype": self.float_dtype}
