"""Load a saved .mlpackage's ML program and run it op by op in numpy, keeping its states between calls."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ExportError
from edgekit_coreml.mil.ops import OPS

log = logging.getLogger(__name__)
STATE_OPS = ("read_state", "coreml_update_state")


def _np_dtype(builtin) -> np.dtype:
    from coremltools.converters.mil.mil import types

    return np.dtype(types.nptype_from_builtin(builtin))


def load_program(path: str | Path, function: str = "main"):
    """The pymil Function of a saved .mlpackage, read from its model.mil proto and weights/weight.bin blobs."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    prog = load(spec, spec.specificationVersion, mlmodel.weights_dir)
    return prog.functions[function], dict(spec.description.metadata.userDefined)


class MILProgram:
    """Runs one function of an ML program; `run(inputs)` returns its outputs, states persist until `reset()`."""

    def __init__(self, path: str | Path, function: str = "main"):
        self.fn, self.metadata = load_program(path, function)
        self.input_names, self.state_shapes = [], {}
        for name, var in self.fn.inputs.items():
            if var.sym_type.__name__.startswith("state"):  # types.state wraps the tensor type
                wrapped = var.sym_type.wrapped_type()
                self.state_shapes[name] = (tuple(int(s) for s in wrapped.get_shape()),
                                           _np_dtype(wrapped.get_primitive()))
            else:
                self.input_names.append(name)
        self.output_names = [v.name for v in self.fn.outputs]
        self.ops = list(self.fn.operations)
        unknown = sorted({o.op_type for o in self.ops} - set(OPS) - set(STATE_OPS) - {"const"})
        if unknown:
            raise ExportError(f"the ML program uses MIL ops the Linux evaluator does not implement: {unknown}")
        self.consts: dict[str, Any] = {}
        self._fold_constants()
        self.states: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self.states = {n: np.zeros(shape, dtype) for n, (shape, dtype) in self.state_shapes.items()}

    def _fold_constants(self) -> None:
        """const and constexpr_* ops (weights, dequantized weights) are evaluated once, at load."""
        for o in self.ops:
            if o.op_type == "const":
                self.consts[o.outputs[0].name] = np.asarray(o.outputs[0].val)
            elif o.op_type.startswith("constexpr_"):
                args = {k: self.consts[v.name] for k, v in o.inputs.items() if not isinstance(v, (list, tuple))}
                self._store(o, OPS[o.op_type](**args), self.consts)
        self.ops = [o for o in self.ops if o.op_type != "const" and not o.op_type.startswith("constexpr_")]
        # fp16 constants are kept as exact fp32 copies: ops compute in fp32 anyway, and weights are then not
        # converted again on every call (results are still rounded to each op's declared dtype)
        for name, val in self.consts.items():
            if val.dtype == np.float16:
                self.consts[name] = val.astype(np.float32)

    def _store(self, o, result, env: dict[str, Any]) -> None:
        results = result if isinstance(result, tuple) else (result,)
        for var, val in zip(o.outputs, results):
            env[var.name] = np.asarray(val).astype(_np_dtype(var.dtype), copy=False)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, Any] = dict(self.consts)
        for name in self.input_names:
            dtype = _np_dtype(self.fn.inputs[name].dtype)
            env[name] = np.asarray(inputs[name]).astype(dtype)
        for o in self.ops:
            if o.op_type == "read_state":
                env[o.outputs[0].name] = self.states[o.inputs["input"].name].copy()
                continue
            if o.op_type == "coreml_update_state":
                name = o.inputs["state"].name
                value = env[o.inputs["value"].name]
                self.states[name] = value.astype(self.state_shapes[name][1])
                env[o.outputs[0].name] = value
                continue
            args = {k: ([env[x.name] for x in v] if isinstance(v, (list, tuple)) else env[v.name])
                    for k, v in o.inputs.items()}
            try:
                self._store(o, OPS[o.op_type](**args), env)
            except Exception as e:
                raise RuntimeError(f"evaluating {o.op_type} {o.name!r}: {type(e).__name__}: {e}") from e
        return {n: env[n] for n in self.output_names}

    def op_counts(self) -> dict[str, int]:
        from collections import Counter

        return dict(Counter(o.op_type for o in self.fn.operations))
