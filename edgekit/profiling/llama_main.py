"""Profiling with the user's build of ExecuTorch's `llama_main` (Android phones: we cannot build binaries here).

llama_main loads the model on every call and prints one `PyTorchObserver {json}` line of stats per generation; each
call becomes one run event. It reports decode time only in aggregate, so a run's per-token decode latencies are its
average repeated (said so in the report's runner section); it gives no peak RSS and no per-op profile.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import DeviceError
from edgekit.profiling.collected import Collected
from edgekit.profiling.remote import check_storage, cleanup, remote_root

if TYPE_CHECKING:
    from edgekit.profiling.bundles import BundleRef
    from edgekit.profiling.collected import EventFn
    from edgekit.profiling.devices import Device
    from edgekit.profiling.runner_protocol import RunnerOptions
    from edgekit.profiling.settings import Settings

OBSERVER = re.compile(r"PyTorchObserver\s+(\{.*\})")
FILLER = " the"   # one token per word in byte-level BPE vocabularies (SmolLM2, Llama 3, Qwen)


def parse_observer(text: str) -> dict[str, Any]:
    """The last PyTorchObserver stats of llama_main's output; DeviceError when there is none."""
    found = OBSERVER.findall(text)
    if not found:
        raise DeviceError("llama_main printed no PyTorchObserver stats line; is it ExecuTorch's llama_main? "
                          f"its output ended with: {text.strip()[-300:]!r}")
    return json.loads(found[-1])


def observer_to_run(stats: dict[str, Any], prompt_length: int, index: int, warmup: bool) -> dict[str, Any]:
    """One run event (the runner's format) from llama_main's stats."""
    scale = 1000.0 / float(stats.get("SCALING_FACTOR_UNITS_PER_SECOND", 1000))
    start = stats["inference_start_ms"] * scale
    generated = int(stats.get("generated_tokens", 0))
    first = stats["first_token_ms"] * scale
    decode_total = stats["inference_end_ms"] * scale - first
    per_token = decode_total / max(generated - 1, 1)
    return {"event": "run", "prompt_length": int(stats.get("prompt_tokens", prompt_length)), "index": index,
            "warmup": warmup, "prefill_ms": stats["prompt_eval_end_ms"] * scale - start, "ttft_ms": first - start,
            "decode_ms": [per_token] * max(generated - 1, 0),
            "load_ms": (stats["model_load_end_ms"] - stats["model_load_start_ms"]) * scale}


class LlamaMainRunner:
    name = "llama_main"
    accepted = ("the path of your build of ExecuTorch's llama_main (--runner PATH, not a .py file, or runner = \"...\" "
                "for the device in devices.toml): the way to profile Android phones, since we cannot build Android "
                "binaries here")

    def accepts(self, device: Device, runner_path: Path | None) -> bool:
        return runner_path is not None and runner_path.suffix != ".py"

    def run(self, device: Device, ref: BundleRef, settings: Settings, options: RunnerOptions,
            on_event: EventFn | None) -> Collected:
        return run_llama_main(device, ref, settings, options.runner_path, on_event)


def run_llama_main(device: Device, ref: BundleRef, settings: Settings, binary: Path,
                   on_event: EventFn | None) -> Collected:
    if not binary.is_file():
        raise DeviceError(f"runner {binary} does not exist; give the path of your llama_main build")
    root = remote_root(device)
    got = Collected(runner={"kind": "llama_main", "binary": binary.name, "remote_dir": root,
                            "decode_latencies": "per-run average (llama_main reports decode time in aggregate)"})
    got.runner["storage"] = check_storage(device, device.workdir(), ref.bytes() + binary.stat().st_size,
                                          settings.timeout_s)
    m = ref.manifest
    model = f"{root}/bundle/{m['artifact']['main']}"
    tokenizer = f"{root}/bundle/{m['tokenizer']['file']}"
    try:
        device.run(["mkdir", "-p", root], timeout=60).check(f"{device.uri}: mkdir")
        device.push(binary, f"{root}/llama_main", settings.timeout_s)
        device.run(["chmod", "755", f"{root}/llama_main"], timeout=60).check(f"{device.uri}: chmod")
        device.push(ref.path, f"{root}/bundle", settings.timeout_s)
        _measure(device, settings, root, model, tokenizer, got, on_event)
        got.add({"event": "op_profile", "available": False, "reason": "llama_main reports no per-op profile"},
                on_event)
        got.add({"event": "done", "peak_rss_bytes": None}, on_event)
    except DeviceError as e:
        got.error = e
    finally:
        cleanup(device, root)
    return got


def _measure(device: Device, settings: Settings, root: str, model: str, tokenizer: str, got: Collected,
             on_event: EventFn | None) -> None:
    loaded = False
    for length in settings.prompt_lengths:
        argv = [f"{root}/llama_main", f"--model_path={model}", f"--tokenizer_path={tokenizer}",
                f"--prompt={FILLER * length}", f"--seq_len={length + settings.decode_tokens + 1}",
                "--temperature=0"]
        if settings.threads:
            argv.append(f"--cpu_threads={settings.threads}")
        for i in range(settings.warmup + settings.runs):
            res = device.run(argv, timeout=settings.timeout_s)
            res.check(f"{device.uri}: llama_main")
            run = observer_to_run(parse_observer(res.stdout), length, i, i < settings.warmup)
            if not loaded:
                got.add({"event": "load", "load_ms": run["load_ms"], "max_seq_len": None}, on_event)
                loaded = True
            got.add(run, on_event)
