"""Every error edgekit raises on purpose. Each message names the bad value and what would be accepted."""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class: catch this to handle any edgekit failure."""


class CheckpointError(EdgekitError):
    """A checkpoint folder or file is missing, truncated, or does not match its config."""


class UnsupportedArchitecture(EdgekitError):
    """The checkpoint's architecture is not one of the supported families."""


class TokenizerError(EdgekitError):
    """The tokenizer is missing or unusable; raised only where a tokenizer is needed."""


class UnknownTarget(EdgekitError):
    """A target name that no installed plugin provides."""


class UnsupportedOption(EdgekitError):
    """A spec option (quant scheme, kv cache, max_seq_len ...) that the target or model does not support."""


class QuantSchemeError(EdgekitError):
    """A quantization scheme that is malformed (bits, group size, activation mode, override) or unknown by name."""


class UnknownQuantScheme(QuantSchemeError):
    """A scheme name that the registry does not hold; the message lists the known ones."""


class MissingDependency(EdgekitError):
    """An optional package (a target's runtime, a compiler) is not installed."""


class ExportError(EdgekitError):
    """Lowering or serialising an artifact failed."""


class ParityError(EdgekitError):
    """An exported artifact does not match the PyTorch reference within tolerance."""


class BundleError(EdgekitError):
    """A bundle is malformed, tampered with, or cannot be written."""


class DeviceError(EdgekitError):
    """A device is unreachable, refused a command, or dropped mid-run."""


class NoDeviceRunner(DeviceError):
    """No device runner (edgekit's, llama_main, or one a target supplies) can profile on this device with the runner
    that was given; the message names what was given and what each runner accepts."""


class OutputPathError(EdgekitError):
    """An output path is not writable or already exists."""


class DiskFullError(OutputPathError):
    """The disk (or quota) filled up while writing an output; the partial files are removed."""


class PromptError(EdgekitError):
    """A prompt or system message that cannot be tokenized (not valid UTF-8 text)."""


class NumericalError(EdgekitError):
    """A model produced NaN or Inf while running (logits of a prefill or decode step)."""


class ProfileSettingError(EdgekitError):
    """A profile setting that cannot be measured (a prompt longer than the bundle holds, zero runs, no time)."""


class RefusedFileError(EdgekitError):
    """A file an artifact or bundle names that edgekit will not load: an absolute path, one outside its folder, a
    native library other than the one it recorded, or another build of a kernel library already loaded."""


class EvaluationError(EdgekitError):
    """A quality evaluation cannot run: no reference model, a text too short for one window, a session that fails."""


class QualityError(ParityError):
    """An export's quality on the shipped text (KL against the unquantized model) is beyond its scheme's bound."""


class CalibrationError(EdgekitError):
    """A calibrated quantizer's option or text is not usable (an unreadable or too short calibration file)."""
