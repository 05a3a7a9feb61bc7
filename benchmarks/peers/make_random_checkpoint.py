# ruff: noqa
# Copied verbatim from shared/peers/make_random_checkpoint.py (2026-11-26) so the benchmarks do not depend on shared/.
"""Write a randomly initialised Qwen2 checkpoint (HF layout, with a small trained BPE tokenizer).
usage: python make_random_checkpoint.py OUT_DIR {0.5b|tiny}
0.5b has the exact shape of Qwen2.5-0.5B / R1-Distill-class students, for speed and memory work;
its weights are random, so only timings, sizes and parity (not quality) mean anything."""
import sys, torch, glob, json, os
from transformers import Qwen2Config, Qwen2ForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders
out = sys.argv[1]; size = sys.argv[2]
torch.manual_seed(0)
if size == "0.5b":
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True, torch_dtype="bfloat16", rms_norm_eps=1e-6)
else:
    cfg = Qwen2Config(vocab_size=4096, hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, torch_dtype="float32")
m = Qwen2ForCausalLM(cfg).to(torch.bfloat16 if size=="0.5b" else torch.float32)
m.save_pretrained(out)
files = glob.glob("/usr/share/common-licenses/*") + glob.glob("/usr/lib/python3*/**/*.py", recursive=True)[:300]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tr = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>","<|im_start|>","<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train([f for f in files if os.path.isfile(f)], tr)
ft = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None)
ft.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
ft.save_pretrained(out)
print(os.listdir(out))
