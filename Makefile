# Kairos — the README names these targets.
#   make run     set everything up and run the engine on its embedded default
#   make test    install everything the suite needs, then run the whole suite
#   make bench   run the benchmarks (prints figures)
#   make lint    ruff on everything, mypy --strict on the pure floor (engine/logic) and models/

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit integration e2e js-test lint bench setup deps system-deps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Debian packages: a JDK and Maven for the Kafka broker, PostgreSQL for the control plane,
# Chromium for the browser tests, wrk for the benchmarks.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

deps: $(STAMP)

setup: system-deps $(STAMP)
	$(BIN)/kairos setup

run: setup
	$(BIN)/kairos up

js-test: setup
	cd sdk_js && npm test --silent

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

test: setup lint
	cd sdk_js && npm test --silent
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict engine/logic models

bench: setup
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/freshness.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/mail.py
	$(BIN)/python bench/reco_replay.py ../shared/data/taobao/user_behavior.csv ../shared/data/rees46/2019-Oct_head.csv

clean:
	rm -rf var/redis var/kafka/node var/faust .pytest_cache
