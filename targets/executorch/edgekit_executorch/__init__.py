"""edgekit's ExecuTorch target (alias "android"): .pte programs with XNNPACK, run on the host through pybindings.

This module stays light: executorch / torchao are imported only inside the functions that need them.
"""
from edgekit_executorch.target import ExecuTorchTarget

__all__ = ["ExecuTorchTarget"]
