"""HF folder -> f16 GGUF (llama.cpp's own converter) -> Q4_0 GGUF (llama_cpp.llama_model_quantize).

Runs in the llama-cpp venv. usage: lcpp_convert.py SDIST HF_DIR F16_OUT Q4_OUT
The converter is taken from llama-cpp-python's sdist (vendor/llama.cpp: convert_hf_to_gguf.py, conversion/, gguf-py/)
into a temporary folder. It refuses BPE tokenizers whose pre-tokenizer hash it does not know, which is what a random
checkpoint's freshly trained tokenizer is; for a speed run the check is bypassed in that temporary copy (the
pre-tokenizer is then recorded as "qwen2", a byte-level BPE like the one trained). Nothing of the converter is kept.
"""
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

RAISE = 'raise NotImplementedError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")'
BYPASS = 'res = "qwen2"  # edgekit benchmark: random checkpoint, unknown pre-tokenizer hash'


def extract_converter(sdist: str, dest: Path) -> Path:
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if "/vendor/llama.cpp/" in m.name and (
            m.name.endswith("/convert_hf_to_gguf.py") or "/vendor/llama.cpp/conversion/" in m.name
            or "/vendor/llama.cpp/gguf-py/" in m.name)]
        tf.extractall(dest, members=members, filter="data")
    root = next(dest.glob("*/vendor/llama.cpp"))
    base = root / "conversion" / "base.py"
    text = base.read_text()
    if RAISE not in text:
        sys.exit(f"lcpp_convert: the pre-tokenizer check in {base.name} changed; cannot bypass it")
    base.write_text(text.replace(RAISE, BYPASS))
    return root / "convert_hf_to_gguf.py"


def main() -> None:
    sdist, hf_dir, f16_out, q4_out = sys.argv[1:5]
    with tempfile.TemporaryDirectory(prefix="lcpp-convert-") as tmp:
        conv = extract_converter(sdist, Path(tmp))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(conv), hf_dir, "--outtype", "f16", "--outfile", f16_out], check=True)
        print(f"converted to f16 in {time.perf_counter() - t0:.1f} s", flush=True)
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 2
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(f16_out.encode(), q4_out.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize returned {rc}")
    print(f"quantized to Q4_0 in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
