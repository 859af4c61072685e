# Both entry points bootstrap .venv from nothing, so a fresh clone needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit bench clean

# Debian packages the offline speech path needs (flite: local TTS).
DEB_PACKAGES := flite

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEB_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$missing; fi; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,telnyx,local]'
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

bench: $(STAMP)
	$(BIN)/python bench/bench_gateway.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
