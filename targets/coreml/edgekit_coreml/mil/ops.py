"""numpy semantics of the MIL ops our decoder programs contain, one function per op type.

Each function takes the op's inputs by parameter name (numpy arrays; a list for tuple inputs such as concat's values)
and returns the output value(s). Float math runs in fp32; the evaluator casts every result to the dtype the program
declares (fp16 for an fp16 program), which is where Core ML rounds too. Slice semantics reuse coremltools' own
helpers; tests/coreml/test_mil_ops.py checks every op against coremltools' `value_inference` where one exists.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

OPS: dict[str, Callable[..., Any]] = {}


def op(*names: str):
    def register(fn):
        for n in names:
            if n in OPS:
                raise RuntimeError(f"MIL op {n!r} registered twice")
            OPS[n] = fn
        return fn
    return register


def _f(x):
    """fp16 -> fp32 for computing; other dtypes unchanged."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


_ELEMENTWISE = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
    "pow": np.power, "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal, "logical_and": np.logical_and,
    "logical_or": np.logical_or, "floor_div": np.floor_divide, "mod": np.mod,
}


def _binary(fn):
    return lambda x, y: fn(_f(x), _f(y))


for _name, _fn in _ELEMENTWISE.items():
    OPS[_name] = _binary(_fn)


@op("real_div")
def real_div(x, y):
    x, y = np.asarray(x), np.asarray(y)
    out = np.true_divide(_f(x), _f(y))
    # integer real_div (shape arithmetic): coremltools' value_inference floors towards the integer dtype
    return np.floor(out) if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer) else out


_UNARY = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "sin": np.sin, "cos": np.cos, "tanh": np.tanh,
    "floor": np.floor, "ceil": np.ceil, "round": np.round, "sign": np.sign, "logical_not": np.logical_not,
    "square": np.square,
}
def _unary(fn):
    return lambda x: fn(_f(x))


for _name, _fn in _UNARY.items():
    OPS[_name] = _unary(_fn)


@op("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return 1.0 / np.sqrt(_f(x) + np.float32(epsilon))


@op("clip")
def clip(x, alpha, beta):
    return np.minimum(np.maximum(_f(x), _f(alpha)), _f(beta))


@op("inverse")
def inverse(x, epsilon=1e-4):
    return 1.0 / (_f(x) + np.float32(epsilon))


@op("silu")
def silu(x):
    x = _f(x)
    return x / (1.0 + np.exp(-x))


@op("gelu")
def gelu(x, mode="EXACT"):
    """MIL's three gelu formulas (Gemma 3's GeGLU uses TANH_APPROXIMATION, torch's approximate='tanh')."""
    from math import erf

    x, mode = _f(x), str(mode)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    if mode == "EXACT":
        return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float64])(x / np.sqrt(2.0)))
    raise NotImplementedError(f"gelu mode {mode!r}")


@op("sigmoid")
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-_f(x)))


@op("relu")
def relu(x):
    return np.maximum(_f(x), 0)


@op("softmax")
def softmax(x, axis=-1):
    x = _f(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


def _reduce(fn):
    def run(x, axes=None, keep_dims=False):
        ax = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return fn(_f(x), axis=ax, keepdims=bool(keep_dims))  # bool(): numpy 2 rejects np.bool_ here
    return run


for _name, _fn in {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min,
                   "reduce_prod": np.prod}.items():
    OPS[_name] = _reduce(_fn)


@op("linear")
def linear(x, weight, bias=None):
    x = _f(x)
    w = _f(weight)
    y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])  # 2-D: one BLAS gemm
    return y if bias is None else y + _f(bias)


@op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f(x), _f(y)
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("scaled_dot_product_attention")
def sdpa(query, key, value, attn_mask=None):
    q, k, v = _f(query), _f(key), _f(value)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(np.float32(q.shape[-1]))
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        scores = scores + (np.where(m, 0.0, -np.inf).astype(np.float32) if m.dtype == bool else _f(m))
    return np.matmul(softmax(scores, -1), v)


@op("cast")
def cast(x, dtype):
    return np.asarray(x).astype(_DTYPES[str(dtype)])


_DTYPES = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16, "int8": np.int8,
           "uint16": np.uint16, "uint8": np.uint8, "bool": np.bool_, "fp64": np.float64, "int64": np.int64}


@op("shape")
def shape(x):
    return np.asarray(np.shape(x), dtype=np.int32)


@op("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise NotImplementedError("gather with batch_dims != 0")
    idx = np.asarray(indices).astype(np.int64)
    axis = int(axis)
    size = np.shape(x)[axis]
    if validate_indices and ((idx < -size) | (idx >= size)).any():
        raise IndexError(f"gather index out of range for size {size}")
    return np.take(x, np.where(idx < 0, idx + size, idx), axis=axis)


@op("concat")
def concat(values, axis, interleave=False):
    if interleave:
        raise NotImplementedError("concat(interleave=True)")
    return np.concatenate([np.atleast_1d(v) if np.ndim(v) == 0 else v for v in values], axis=int(axis))


@op("reshape")
def reshape(x, shape):
    """iOS 17 semantics: -1 is inferred; a 0 copies the input dim aligned from the right (1 when out of range)."""
    x = np.asarray(x)
    target = [int(s) for s in np.atleast_1d(shape)]
    for i, s in enumerate(target):
        if s == 0:
            j = x.ndim - (len(target) - i)
            target[i] = x.shape[j] if 0 <= j < x.ndim else 1
    return x.reshape(target)


@op("transpose")
def transpose(x, perm):
    return np.transpose(x, [int(p) for p in perm])


@op("expand_dims")
def expand_dims(x, axes):
    x = np.asarray(x)
    rank = x.ndim + len(np.atleast_1d(axes))
    for a in sorted(int(a) % rank for a in np.atleast_1d(axes)):
        x = np.expand_dims(x, a)
    return x


@op("squeeze")
def squeeze(x, axes=None):
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in np.atleast_1d(axes)))


@op("tile")
def tile(x, reps):
    return np.tile(x, [int(r) for r in reps])


@op("select")
def select(cond, a, b):
    return np.where(np.asarray(cond).astype(bool), _f(a), _f(b))


@op("fill")
def fill(shape, value=0.0):
    return np.full([int(s) for s in shape], value)


@op("range_1d")
def range_1d(end, start, step):
    return np.arange(start, end, step)


@op("band_part")
def band_part(x, lower=-1, upper=-1):
    x = np.asarray(x)
    rows, cols = np.indices(x.shape[-2:])
    keep = np.ones(x.shape[-2:], bool)
    if lower >= 0:
        keep &= rows - cols <= lower
    if upper >= 0:
        keep &= cols - rows <= upper
    return np.where(keep, x, np.zeros_like(x))


def _slices(x_shape, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    from coremltools.converters.mil.mil.ops.defs._utils import get_squeeze_axes, solve_slice_by_index_slice

    rank = len(x_shape)
    stride = [1] * rank if stride is None else [int(s) for s in stride]
    masks = [[False] * rank if m is None else [bool(v) for v in m] for m in (begin_mask, end_mask, squeeze_mask)]
    sl = solve_slice_by_index_slice(x_shape, [int(b) for b in begin], [int(e) for e in end], stride, *masks)
    return sl, get_squeeze_axes(masks[2], rank)


@op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    sl, squeeze_axes = _slices(x.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    res = x[sl]
    return np.squeeze(res, axis=tuple(squeeze_axes)) if squeeze_axes else res


@op("slice_by_size")
def slice_by_size(x, begin, size):
    x = np.asarray(x)
    sl = tuple(slice(int(b), x.shape[i] if int(s) == -1 else int(b) + int(s)) for i, (b, s) in enumerate(zip(begin, size)))
    return x[sl]


@op("scatter")
def scatter(data, indices, updates, axis=0, mode="update", validate_indices=False):
    """iOS 17 scatter, mode 'update' (the ring cache's write): data's slices at `indices` along `axis` replaced by
    updates' slices in order. iOS 17 counts negative indices as out of range, so they are refused here, not wrapped."""
    if str(mode) != "update":
        raise NotImplementedError(f"scatter mode {mode!r}")
    idx = np.asarray(indices).astype(np.int64).reshape(-1)
    axis = int(axis) % np.ndim(data)
    size = np.shape(data)[axis]
    if ((idx < 0) | (idx >= size)).any():
        raise IndexError(f"scatter indices {idx.tolist()} outside 0..{size - 1}")
    out = np.array(data, copy=True)
    moved = np.moveaxis(out, axis, 0)   # a view: writes land in `out`
    moved[idx] = np.moveaxis(np.asarray(updates), axis, 0)
    return out


@op("slice_update")
def slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    out = np.array(x, copy=True)
    sl, _ = _slices(out.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    out[sl] = np.reshape(update, out[sl].shape)
    return out


@op("constexpr_blockwise_shift_scale")
def blockwise_shift_scale(data, scale, offset=None):
    """iOS 18: (data - offset) * scale, each scale/offset element covering one block of `data`."""
    d = np.asarray(data).astype(np.float32)
    if offset is not None:
        d = d - _expand_blocks(np.asarray(offset).astype(np.float32), d.shape)
    return d * _expand_blocks(_f(scale), d.shape)


def _expand_blocks(param: np.ndarray, shape) -> np.ndarray:
    param = param.reshape((1,) * (len(shape) - param.ndim) + param.shape)
    for axis, (n, m) in enumerate(zip(shape, param.shape)):
        if m != n:
            param = np.repeat(param, n // m, axis=axis)
    return param


@op("constexpr_lut_to_dense")
def lut_to_dense(indices, lut, vector_axis=None):
    """iOS 18 palettization: lut [*blocks, 2**nbits, 1] indexed per block (scalar entries only)."""
    idx = np.asarray(indices).astype(np.int64)
    lut = _f(lut)
    if lut.shape[-1] != 1:
        raise NotImplementedError("vector palettization (lut vector size > 1)")
    table = lut[..., 0]                                  # [*block_counts, K]
    out = np.empty(idx.shape, np.float32)
    blocks = [n // m for n, m in zip(idx.shape, table.shape[:-1])]
    for pos in np.ndindex(*table.shape[:-1]):
        sl = tuple(slice(p * b, (p + 1) * b) for p, b in zip(pos, blocks))
        out[sl] = table[pos][idx[sl]]
    return out
