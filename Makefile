# Self-documenting: `make help` lists every target with the text after `##`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the suite with every extra and the dev tools

.PHONY: proto
proto: $(STAMP) ## Regenerate the Python stubs (and .pyi) of protos/ into subtitler/
	$(PY) tools/genproto.py

.PHONY: proto-check
proto-check: $(STAMP) ## Fail if the committed stubs differ from what `make proto` generates
	$(PY) tools/genproto.py --check

.PHONY: lint
lint: $(STAMP) ## ruff, mypy and the stale-stub check
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) tools/genproto.py --check

.PHONY: test-data
test-data: ## Install the recordings the tests use (Debian's asterisk core sounds; needs root or sudo)
	bash tools/ensure_test_data.sh

.PHONY: test
test: $(STAMP) test-data ## Lint, then unit and integration tests against real services, models and speech
	$(PY) tools/genproto.py --check
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: run
run: $(STAMP) ## Start audio, vad, asr, align, the gateway and the HTTP front (:8080) on localhost (logs in logs/); Ctrl-C stops them all
	$(PY) -m tools.run_suite

.PHONY: bench
bench: $(STAMP) test-data ## Benchmarks: the suite against faster-whisper in one process (a long file, 16 short clips), ASR replicas, word timing
	$(PY) -m bench.end_to_end $(BENCH_ARGS)
	$(PY) -m bench.short_clips
	$(PY) -m bench.replicas
	$(PY) -m bench.streaming
	$(PY) -m bench.word_timing

.PHONY: clean
clean: ## Remove caches, logs and the local data directory (not .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache logs data
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
