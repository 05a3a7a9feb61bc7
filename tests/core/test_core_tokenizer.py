"""Tokenizer and chat template parity with transformers: HF folders, GGUF metadata (tiny and SmolLM2), BOS rules."""
from __future__ import annotations

import json

import pytest
from checkpoints import make_tokenizer

from edgekit.model.tokenizer import Tokenizer

STRINGS = [
    "Hello world", "  two leading spaces", "tabs\tand\t\ttabs", "trailing   ", "\n\nnew\n\n\nlines\r\n",
    "Édition spéciale: naïve café, 東京, Grüße — emoji 🙂👍🏽", "<|im_start|>user\nHi<|im_end|>\n",
    "<think>reasoning</think> answer", "a<|endoftext|>b", "", " ", "12345 67.89 1e-5 I'm you'll",
    "def f(x):\n    return x  # comment", "      \n   \t ",
]
R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt and not ns.is_tool %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
R1_SPECIALS = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>")
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "<think>greet</think>Hello!"}, {"role": "user", "content": "Ça va? 東京"}],
]


def assert_same_tokenizer(ours: Tokenizer, theirs, strings=STRINGS) -> None:
    for s in strings:
        for special in (False, True):
            want = theirs(s, add_special_tokens=special)["input_ids"]
            assert ours.encode(s, add_special_tokens=special) == want, (s, special)
        ids = theirs(s, add_special_tokens=True)["input_ids"]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), s
    # arbitrary id runs, including ones that split UTF-8 sequences
    for start in range(0, min(ours.vocab_size, 2000), 97):
        ids = list(range(start, min(start + 7, ours.vocab_size)))
        assert ours.decode(ids) == theirs.decode(ids)


def assert_same_templates(ours: Tokenizer, theirs) -> None:
    for conv in CONVERSATIONS:
        for gen in (True, False):
            want = theirs.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(conv, add_generation_prompt=gen) == want


def qwen_style_copy(src, dst):
    """The folder's tokenizer with Qwen2's real normalizer and pre-tokenizer (NFC + split regex), as Qwen ships it.

    transformers 5 builds Qwen2Tokenizer for model_type qwen2/qwen3 and re-creates those two parts whatever
    tokenizer.json says; edgekit (like tokenizers, llama.cpp and ORT GenAI) follows tokenizer.json. With a real Qwen
    tokenizer.json both agree, which is what this checks."""
    import shutil

    from edgekit.model.tokenizer import _QWEN2_SPLIT

    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    tj = json.loads((dst / "tokenizer.json").read_text())
    tj["normalizer"] = {"type": "NFC"}
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": _QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    (dst / "tokenizer.json").write_text(json.dumps(tj))
    return dst


def llama_cpp_split(theirs, pre: str):
    """transformers' GGUF tokenizer with llama.cpp's choices for `pre` where transformers' loader makes others:
    for "smollm" llama.cpp (and SmolLM2's own tokenizer.json) cuts every digit apart before GPT-2's regex, transformers
    keeps the bare regex ("  99": llama.cpp [ĠĠ, 9, 9], transformers [Ġ, Ġ, 9, 9]; test_gguf_smollm_ids.py checks
    edgekit against llama.cpp's ids); for Llama 3 style ones llama.cpp ignores merges for whole-vocabulary words (as
    Llama 3's tokenizer.json says), transformers does not. Everything else stays transformers' reference; `theirs`
    itself is not changed."""
    import copy

    from tokenizers import pre_tokenizers

    from edgekit.model.tokenizer import GGUF_LLAMA3_STYLE_PRES

    if pre == "smollm":
        theirs = copy.deepcopy(theirs)  # it may be a session fixture
        theirs.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif pre in GGUF_LLAMA3_STYLE_PRES:
        theirs = copy.deepcopy(theirs)
        theirs.backend_tokenizer.model.ignore_merges = True
    return theirs


@pytest.mark.parametrize("case", ["llama", "qwen2", "qwen3"])
def test_hf_folder_tokenizer_matches_transformers(case, checkpoint_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = checkpoint_dir(case)
    if case.startswith("qwen"):
        folder = qwen_style_copy(folder, tmp_path / case)
    ours, theirs = Tokenizer.from_folder(folder), AutoTokenizer.from_pretrained(folder)
    assert_same_tokenizer(ours, theirs)
    assert_same_templates(ours, theirs)


def test_bos_semantics_match_transformers(tmp_path):
    """A tokenizer.json whose post-processor adds BOS (as Llama 3's does): BOS only with add_special_tokens=True;
    tokenizer_config's add_bos_token is ignored when tokenizer.json exists, by transformers 5 and by us."""
    from transformers import AutoTokenizer

    make_tokenizer(tmp_path, bos="<|endoftext|>")
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": False}))
    tj = json.loads((tmp_path / "tokenizer.json").read_text())
    tj["post_processor"] = {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    ours, theirs = Tokenizer.from_folder(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert_same_tokenizer(ours, theirs)
    assert ours.add_bos and ours.encode("hi", add_special_tokens=True)[0] == ours.bos_id == 0
    assert ours.encode("hi")[0] != ours.bos_id


def test_r1_template_ends_generation_prompt_in_think(tmp_path):
    from transformers import AutoTokenizer

    make_tokenizer(tmp_path, chat_template=R1_TEMPLATE, specials=("<|endoftext|>",) + R1_SPECIALS,
                   eos="<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>")
    ours, theirs = Tokenizer.from_folder(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert_same_templates(ours, theirs)
    prompt = ours.apply_chat_template(CONVERSATIONS[0])
    assert prompt.startswith("<｜begin▁of▁sentence｜>") and prompt.endswith("<｜Assistant｜><think>\n")
    assert ours.encode(prompt) == theirs.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True,
                                                              tokenize=True, return_dict=False)
    assert "greet" not in ours.apply_chat_template(CONVERSATIONS[1])  # reasoning of past turns dropped


@pytest.mark.parametrize("pre,add_bos", [("gpt2", None), ("qwen2", False), ("llama-bpe", True),
                                         ("deepseek-r1-qwen", None), ("smollm", None)])
def test_gguf_tokenizer_matches_transformers(pre, add_bos, tiny_gguf):
    """Byte-level BPE from GGUF metadata, per pre-tokenizer; <think> as a user-defined (non-special) token."""
    from transformers import AutoTokenizer

    import edgekit

    folder, name = tiny_gguf("qwen2", f"tok-{pre}", pre=pre, add_bos=add_bos, user_defined=("<think>", "</think>"))
    ours = edgekit.load(folder / name).tokenizer
    theirs = llama_cpp_split(AutoTokenizer.from_pretrained(folder, gguf_file=name), pre)
    assert json.loads(ours.json) == json.loads(theirs.backend_tokenizer.to_str())
    assert_same_tokenizer(ours, theirs)
    assert_same_templates(ours, theirs)
    assert ours.decode(ours.encode("<think>x</think>"), skip_special_tokens=True) == "<think>x</think>"


def test_smollm2_gguf_tokenizer_and_template_match_transformers(smollm2, smollm2_hf_tokenizer):
    ours, theirs = smollm2.tokenizer, llama_cpp_split(smollm2_hf_tokenizer, "smollm")
    assert json.loads(ours.json) == json.loads(theirs.backend_tokenizer.to_str())
    assert_same_tokenizer(ours, theirs)
    assert_same_templates(ours, theirs)
    assert ours.apply_chat_template(CONVERSATIONS[0]).startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert smollm2.stop_ids == (2,) and ours.token_to_id("<|im_end|>") == 2


def write_sentencepiece_gguf(path, with_merges: bool):
    """A Llama-2-style GGUF vocabulary (tokenizer.ggml.model "llama"): <unk>, <s>, </s>, byte tokens, pieces with
    scores; llama.cpp's files usually carry no merges (derived from scores), some do."""
    import numpy as np
    from checkpoints import _CORPUS
    from gguf import GGMLQuantizationType, GGUFWriter, TokenType
    from tokenizers import SentencePieceBPETokenizer

    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(_CORPUS * 4, vocab_size=300, special_tokens=["<unk>"])
    model = json.loads(sp.to_str())["model"]
    pieces = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t != "<unk>"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + ["<think>", "</think>"]
    types = ([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
             + [TokenType.NORMAL] * len(pieces) + [TokenType.USER_DEFINED] * 2)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))] + [0.0, 0.0]
    w = GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if with_merges:
        w.add_token_merges([" ".join(m) if not isinstance(m, str) else m for m in model["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}")
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), np.float32), raw_dtype=GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("with_merges", [False, True])
def test_gguf_sentencepiece_tokenizer_matches_transformers(with_merges, tmp_path):
    from transformers import AutoTokenizer

    from edgekit.model.gguf_reader import metadata, open_gguf

    path = write_sentencepiece_gguf(tmp_path / "sp.gguf", with_merges)
    ours = Tokenizer.from_gguf(metadata(open_gguf(path)))
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file="sp.gguf")
    assert json.loads(ours.json) == json.loads(theirs.backend_tokenizer.to_str())
    assert_same_tokenizer(ours, theirs)
    assert_same_templates(ours, theirs)
    assert ours.add_bos and ours.encode("hi", add_special_tokens=True)[0] == 1  # llama.cpp's default for "llama"


def test_saved_tokenizer_writes_merges_compactly_and_encodes_the_same(smollm2, tmp_path):
    from edgekit.evaldata import eval_text

    ours = smollm2.tokenizer
    ours.save(tmp_path)
    written = (tmp_path / "tokenizer.json").read_text()
    merges = json.loads(written)["model"]["merges"]
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    assert len(written.encode()) <= len(ours.json.encode()) - 4 * len(merges)
    again = Tokenizer.from_folder(tmp_path)
    text = eval_text().text[:20000] + " Émile's café, 東京! 🙂"
    assert again.encode(text) == ours.encode(text)


def test_merges_whose_tokens_hold_a_space_stay_pairs():
    from edgekit.model.tokenizer import compact_json

    doc = {"model": {"type": "BPE", "merges": [["a b", "c"], ["d", "e"]]}}
    assert json.loads(compact_json(json.dumps(doc)))["model"]["merges"] == [["a b", "c"], ["d", "e"]]
    doc["model"]["merges"] = [["a", "c"], ["d", "e"]]
    assert json.loads(compact_json(json.dumps(doc)))["model"]["merges"] == ["a c", "d e"]
