"""The host generation loop: greedy vs sampled, seeds, top-k/top-p, stop tokens, streaming, <think> split."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from checkpoints import make_tokenizer
from test_core_tokenizer import R1_SPECIALS, R1_TEMPLATE

from edgekit.errors import UnsupportedOption
from edgekit.model.tokenizer import Tokenizer
from edgekit.runtime import GenerationConfig, ThinkSplitter, generate, generate_text
from edgekit.runtime.sampling import choose


class ScriptedSession:
    """A Session whose logits make `script[k]` the clear favourite for the k-th generated token."""

    def __init__(self, vocab: int, script: list[int], max_seq_len: int = 256):
        self.vocab, self.script, self.max_seq_len, self.last_logits_only = vocab, script, max_seq_len, True
        self.prompt_len = 0
        self.fed: list[int] = []

    def reset(self) -> None:
        self.prompt_len, self.fed = 0, []

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        assert list(input_pos) == list(range(len(self.fed), len(self.fed) + tokens.shape[1])), "positions must be contiguous"
        if not self.fed:
            self.prompt_len = tokens.shape[1]
        self.fed += tokens[0].tolist()
        k = len(self.fed) - self.prompt_len
        logits = np.zeros((1, 1, self.vocab), dtype=np.float32)
        logits[0, 0, self.script[min(k, len(self.script) - 1)]] = 10.0
        return logits


@pytest.fixture(scope="module")
def r1_tokenizer(tmp_path_factory) -> Tokenizer:
    """An R1-distill-style tokenizer: <think>/</think> are special tokens, the template ends in '<think>\\n'."""
    folder = tmp_path_factory.mktemp("r1tok")
    make_tokenizer(folder, chat_template=R1_TEMPLATE, specials=("<|endoftext|>",) + R1_SPECIALS,
                   eos="<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>")
    return Tokenizer.from_folder(folder)


def manual_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    dec = model.decoder(64)
    with torch.no_grad():
        logits = dec(torch.tensor([prompt_ids]), torch.arange(len(prompt_ids)))
        out, pos = [], len(prompt_ids)
        for _ in range(n):
            out.append(int(logits[0, -1].argmax()))
            logits = dec(torch.tensor([[out[-1]]]), torch.tensor([pos]))
            pos += 1
    return out


def test_greedy_equals_argmax_loop_and_sampling_is_seeded(tiny_model):
    model = tiny_model("qwen2")
    prompt = model.tokenizer.encode("The quick brown fox")
    session = model.session(64)
    greedy = generate(session, prompt, GenerationConfig(max_new_tokens=12, stop_ids=(-1,)))
    assert greedy.token_ids == manual_greedy(model, prompt, 12) and greedy.stop_reason == "max_new_tokens"
    hot = {"max_new_tokens": 24, "temperature": 5.0, "stop_ids": (-1,)}
    a = generate(session, prompt, GenerationConfig(**hot, seed=7)).token_ids
    b = generate(session, prompt, GenerationConfig(**hot, seed=7)).token_ids
    c = generate(session, prompt, GenerationConfig(**hot, seed=8)).token_ids
    assert a == b and a != c and a != greedy.token_ids[:24]
    # top_k=1 and a vanishing top_p both reduce sampling to greedy
    for narrow in ({"top_k": 1}, {"top_p": 1e-9}):
        cfg = GenerationConfig(max_new_tokens=12, temperature=5.0, seed=1, stop_ids=(-1,), **narrow)
        assert generate(session, prompt, cfg).token_ids == greedy.token_ids


def test_top_k_and_top_p_restrict_the_candidates():
    logits = np.log(np.array([0.4, 0.3, 0.15, 0.1, 0.05]))
    rng = np.random.default_rng(0)
    draws = [choose(logits, 1.0, 0, 1.0, rng) for _ in range(4000)]
    freq = np.bincount(draws, minlength=5) / len(draws)
    assert np.abs(freq - [0.4, 0.3, 0.15, 0.1, 0.05]).max() < 0.03  # plain sampling follows softmax
    assert {choose(logits, 1.0, 2, 1.0, rng) for _ in range(500)} == {0, 1}  # top-k = 2
    assert {choose(logits, 1.0, 0, 0.6, rng) for _ in range(500)} == {0, 1}  # nucleus 0.4 + 0.3 >= 0.6
    assert {choose(logits, 1.0, 0, 0.8, rng) for _ in range(800)} == {0, 1, 2}
    assert choose(logits, 0.0, 0, 1.0, rng) == 0


def test_stop_tokens_and_limits(r1_tokenizer):
    tok = r1_tokenizer
    eos = tok.token_to_id("<｜end▁of▁sentence｜>")
    body = tok.encode(" Four.")
    session = ScriptedSession(tok.vocab_size, body + [eos] + body)
    res = generate_text(session, tok, "2+2?", max_new_tokens=50)
    assert res.stop_reason == "stop_token" and res.token_ids == body + [eos] and res.text == " Four."
    res = generate_text(session, tok, "2+2?", max_new_tokens=50, stop_ids=(body[1],))  # caller's stop ids win
    assert res.token_ids == body[:2] and res.stop_reason == "stop_token"
    res = generate_text(session, tok, "2+2?", max_new_tokens=2)
    assert len(res.token_ids) == 2 and res.stop_reason == "max_new_tokens"
    short = ScriptedSession(tok.vocab_size, body * 20, max_seq_len=len(tok.encode("2+2?")) + 3)
    assert generate_text(short, tok, "2+2?", max_new_tokens=50).stop_reason == "max_seq_len"


def test_streaming_and_think_split_with_r1_prompt(r1_tokenizer):
    """The R1 template ends the prompt in '<think>\\n': generated text is reasoning until </think>."""
    tok = r1_tokenizer
    eos = tok.token_to_id("<｜end▁of▁sentence｜>")
    script = tok.encode("Two and two make four, Grüße 🙂.</think>\n\nThe answer is 4.") + [eos]
    pieces: list[tuple[str, str]] = []
    res = generate_text(ScriptedSession(tok.vocab_size, script), tok, "What is 2+2?", chat=True,
                        stream=lambda kind, text: pieces.append((kind, text)), max_new_tokens=100)
    assert res.reasoning == "Two and two make four, Grüße 🙂." and res.answer == "The answer is 4."
    assert "".join(t for _, t in pieces) == res.text.replace("</think>", "")
    assert "".join(t for k, t in pieces if k == "reasoning").strip() == res.reasoning
    assert len(pieces) > 3 and all("\ufffd" not in t for _, t in pieces)  # streamed, never half a UTF-8 char


def test_think_tags_in_the_output_are_split(r1_tokenizer):
    tok = r1_tokenizer
    eos = tok.token_to_id("<｜end▁of▁sentence｜>")
    script = tok.encode("<think>plan</think>done") + [eos]
    assert tok.token_to_id("<think>") in script  # a special token, which the text must keep for the splitter
    res = generate_text(ScriptedSession(tok.vocab_size, script), tok, "go", max_new_tokens=20)
    assert (res.reasoning, res.answer, res.text) == ("plan", "done", "<think>plan</think>done")


@pytest.mark.parametrize("pieces", [["<thi", "nk>abc</th", "ink>ans"], list("<think>abc</think>ans"),
                                    ["<think>abc</think>", "ans"], ["<", "think", ">abc<", "/think", ">ans"]])
def test_think_splitter_holds_tags_split_across_pieces(pieces):
    s = ThinkSplitter()
    out = [p for piece in pieces for p in s.feed(piece)] + s.flush()
    assert "".join(t for k, t in out if k == "reasoning") == "abc"
    assert "".join(t for k, t in out if k == "answer") == "ans"


def test_think_splitter_prompt_ending_in_think_and_lookalikes():
    s = ThinkSplitter(starts_in_think=True)
    out = s.feed("abc</thin") + s.feed("k>x <thinking is not a tag") + s.flush()
    assert s.reasoning == "abc" and s.answer == "x <thinking is not a tag" and out[0] == ("reasoning", "abc")


def test_bad_generation_options(tiny_model):
    with pytest.raises(UnsupportedOption) as e:
        GenerationConfig.from_options(temprature=0.5)
    assert "temprature" in str(e.value) and "temperature" in str(e.value)
    with pytest.raises(UnsupportedOption) as e:
        GenerationConfig.from_options(top_p=1.5)
    assert "top_p=1.5" in str(e.value) and "0 < top_p <= 1" in str(e.value)
    session = tiny_model("qwen2").session(8)
    with pytest.raises(UnsupportedOption):
        generate(session, [], GenerationConfig())
    with pytest.raises(UnsupportedOption) as e:
        generate(session, list(range(10)), GenerationConfig())
    assert "10 tokens" in str(e.value) and "max_seq_len is 8" in str(e.value)
