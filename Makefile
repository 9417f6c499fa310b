# CasaTwin — the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-packages jars run test lint format bench loadtest clean wheel

## setup: Debian packages that are missing, the virtualenv with the project, then the JVM
## jars (Apache Kafka's broker, Spark's Kafka connector) from Maven Central
setup: system-packages $(STAMP) jars

# First: pip builds mysqlclient against libmariadb-dev.
system-packages:
	@scripts/install-system-packages

$(STAMP): pyproject.toml | system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[spark,dev]'
	@touch $(STAMP)

# Maven resolves them once (checksums verified) into .casatwin/jars; later runs copy nothing.
jars: $(STAMP)
	$(BIN)/casatwin stack jars

## run: the whole twin on this machine; prints the URLs; Ctrl-C stops everything
run: setup
	$(BIN)/casatwin stack up

## test: every test, against real servers that the test session starts
test: setup
	$(BIN)/pytest

## lint: ruff
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: every benchmark, each with its reference measured in the same run
bench: setup
	$(BIN)/casatwin bench

## loadtest: Locust against a private stack and dashboard (bounded: USERS, DURATION seconds);
## CSV + HTML report with p50/p95/p99 in loadtest/reports/<UTC time>/
USERS ?= 40
DURATION ?= 60
loadtest: setup
	$(BIN)/python -m loadtest.run --users $(USERS) --duration $(DURATION)

## wheel: the project's wheel in dist/, which the appliance's casatwin role installs
## (reproducible: the same commit gives the same bytes, so a second converge changes nothing)
wheel: setup
	rm -f dist/casatwin-*.whl
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) \
	  $(BIN)/pip wheel --quiet --no-deps -w dist .

clean:
	rm -rf .casatwin test-artifacts .pytest_cache .ruff_cache
