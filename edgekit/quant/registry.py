"""Named quantization schemes: one meaning per name on every target; `get_scheme` fails naming the known ones."""
from __future__ import annotations

from edgekit.errors import QuantSchemeError, UnknownQuantScheme
from edgekit.quant.scheme import QuantScheme, WeightGrid

_SCHEMES: dict[str, QuantScheme] = {}


def register_scheme(scheme: QuantScheme, replace: bool = False) -> QuantScheme:
    """Add `scheme` under its name (QuantSchemeError if the name is taken, unless replace)."""
    if scheme.name in _SCHEMES and not replace:
        raise QuantSchemeError(f"a quantization scheme named {scheme.name!r} is already registered")
    _SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str | QuantScheme) -> QuantScheme:
    """The scheme registered as `name` (a QuantScheme passes through); UnknownQuantScheme names the known ones."""
    if isinstance(name, QuantScheme):
        return name
    try:
        return _SCHEMES[name]
    except (KeyError, TypeError):
        raise UnknownQuantScheme(f"unknown quantization scheme {name!r}; known: {', '.join(scheme_names())}") from None


def scheme_names() -> tuple[str, ...]:
    return tuple(_SCHEMES)


def _builtin() -> None:
    for name, desc in (("fp32", "float32 weights and activations"), ("fp16", "float16 weights, float activations")):
        register_scheme(QuantScheme(name, float_dtype=name, description=desc))
    register_scheme(QuantScheme("w8", WeightGrid(8, None), description="8-bit symmetric per-channel weights, "
                                "float activations"))
    register_scheme(QuantScheme("8da8w", WeightGrid(8, None), activations="int8_token",
                                description="int8 activations per token (dynamic), 8-bit symmetric per-channel "
                                "weights (XNNPACK's qd8-f32-qc8w)"))
    for g in (32, 64, 128):
        register_scheme(QuantScheme(f"w4_g{g}", WeightGrid(4, g, search=True),
                                    description=f"4-bit symmetric weights in groups of {g}, scales searched per "
                                    "group; float activations"))
    register_scheme(QuantScheme("w4", WeightGrid(4, 32), description="4-bit symmetric weights in groups of 32 by "
                                "round-to-nearest (each runtime's own routine); float activations"))
    register_scheme(QuantScheme("w4_g128_rtn", WeightGrid(4, 128),
                                description="4-bit symmetric groups of 128 by round-to-nearest (XNNPACK's stock "
                                "layout and rounding); float activations"))
    register_scheme(QuantScheme("w4m_g32", WeightGrid(4, 32, symmetric=False, search=True),
                                description="4-bit weights with a minimum per group of 32 (GGUF Q4_1's grid), "
                                "searched; float activations"))
    register_scheme(QuantScheme("8da4w", WeightGrid(4, 32, search=True), activations="int8_token",
                                description="int8 activations per token (dynamic), 4-bit symmetric weights in groups "
                                "of 32"))
    register_scheme(QuantScheme("8da4w_g32a", WeightGrid(4, 32, search=True), activations="int8_group",
                                activation_group_size=32,
                                description="int8 activations per block of 32 inputs (like llama.cpp's Q8_1), 4-bit "
                                "symmetric weights in groups of 32"))
    register_scheme(QuantScheme("source", WeightGrid(4, 32, symmetric=False, search=True), keep_source=True,
                                activations="int8_group", activation_group_size=32,
                                description="a quantized checkpoint's own tensors as stored (a GGUF's blocks); "
                                "activations int8 per block of the weight's group where the target's kernels take "
                                "them so (llama.cpp's Q8_1), else float"))

_builtin()
