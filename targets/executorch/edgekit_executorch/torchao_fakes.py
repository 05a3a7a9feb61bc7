"""Shape-only fake kernels for torchao's quantize_affine / dequantize_affine / choose_qparams_affine.

They are CompositeImplicitAutograd ops. Without a fake rule, every retrace of the exported program (run_decompositions,
each ExecuTorch / XNNPACK ExportPass) runs their whole Python body on fake tensors with a symbolic sequence length:
~30 sympy-heavy fake ops per op instance, and an 8da4w decoder has four instances per linear layer. With a fake rule
torch.export uses it instead (torch/export/exported_program.py registers the CIA callable only for ops that have
none). The rules only compute output shapes and dtypes, which `check()` compares with the real ops; the graph and the
numbers are unchanged.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def _reduced_shape(block_size, size, keepdim: bool) -> list:
    from torchao.quantization.quant_primitives import _get_reduction_params

    shape_for_reduction, reduction_dims = _get_reduction_params(block_size, size)
    if keepdim:
        return [size[i] // block_size[i] for i in range(len(block_size))]
    return [s for j, s in enumerate(shape_for_reduction) if j not in reduction_dims]


def _choose_qparams_fake(input, mapping_type, block_size, target_dtype, quant_min=None, quant_max=None, eps=None,
                         scale_dtype=None, zero_point_dtype=None, keepdim=False):
    shape = _reduced_shape(block_size, input.size(), keepdim)
    scale = input.new_empty(shape, dtype=scale_dtype or input.dtype)
    if zero_point_dtype is None:   # symmetric: a float zero point like the scale before its cast; asymmetric: int32
        zero_point_dtype = input.dtype if mapping_type != "ASYMMETRIC" else torch.int32
    return scale, input.new_empty(shape, dtype=zero_point_dtype)


def _quantize_fake(input, block_size, scale, zero_point, output_dtype, quant_min=None, quant_max=None):
    return input.new_empty(input.shape, dtype=output_dtype)


def _dequantize_fake(input, block_size, scale, zero_point, input_dtype, quant_min=None, quant_max=None,
                     output_dtype=torch.float32):
    return input.new_empty(input.shape, dtype=output_dtype)


@contextlib.contextmanager
def shape_only_fakes() -> Iterator[None]:
    """Within the block, retraces of exported programs use the shape-only fake rules.

    torch.library.register_fake refuses CompositeImplicitAutograd ops, so this uses the table torch.export itself
    fills for such ops (torch._subclasses.fake_impls.register_op_impl), and keeps torch.export from dropping the rules
    when each run_decompositions ends (it deregisters every op it preserved). Outside the block nothing changes.
    """
    import torchao.quantization.quant_primitives  # noqa: F401  (defines torch.ops.torchao.*)
    from torch._subclasses import fake_impls
    from torch.export import exported_program

    ops = {}
    for name, fn in (("choose_qparams_affine", _choose_qparams_fake), ("quantize_affine", _quantize_fake),
                     ("dequantize_affine", _dequantize_fake)):
        op = getattr(torch.ops.torchao, name).default
        if not fake_impls._is_op_registered_to_fake_rule(op):
            fake_impls.register_op_impl(op)(
                lambda fake_mode, func, *args, _fn=fn, **kwargs: _with_mode(fake_mode, _fn, args, kwargs))
            ops[op] = fn
    original = exported_program._deregister_op_impl

    def deregister(op):
        if op not in ops:
            original(op)

    exported_program._deregister_op_impl = deregister
    try:
        yield
    finally:
        exported_program._deregister_op_impl = original
        for op in ops:
            fake_impls._deregister_op_impl(op)


def _with_mode(fake_mode, fn, args, kwargs):
    with fake_mode:
        return fn(*args, **kwargs)


def check() -> None:
    """Compare the fake rules with the real ops on concrete tensors (the shapes 8da4w and 8da8w use)."""
    from torchao.quantization.quant_primitives import MappingType

    x = torch.randn(3, 5, 64)
    for mapping, block, keepdim, zdt in ((MappingType.ASYMMETRIC, (1, 1, 64), False, torch.int8),
                                         (MappingType.SYMMETRIC, (1, 1, 32), True, None),
                                         (MappingType.SYMMETRIC, (1, 1, 64), False, torch.int32)):
        args = (x, mapping.name, list(block), torch.int8, -128, 127, 1e-6, torch.float32, zdt, keepdim)
        real = torch.ops.torchao.choose_qparams_affine.default._op_dk(
            torch._C.DispatchKey.CompositeImplicitAutograd, *args)
        fake = _choose_qparams_fake(*args)
        for r, f in zip(real, fake):
            assert r.shape == f.shape and r.dtype == f.dtype, (mapping, block, keepdim, r.shape, f.shape, r.dtype,
                                                               f.dtype)
