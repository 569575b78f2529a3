# ShopMesh. `make up` runs the demo mesh, `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: up down status test check lint typecheck protolint breaking generate certs bench clean debian-packages

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# xds-protos ships its own (older) copies of these packages' modules, and whichever
	@# unpacks last wins: put the owners' files back, at the versions pip chose.
	@for pkg in opentelemetry-proto googleapis-common-protos; do \
		version=$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('$$pkg'))"); \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
			--force-reinstall "$$pkg==$$version" || exit 1; \
	done
	@touch $@

## up: install, generate code and certificates, start etcd and every service, then run
## `meshctl demo` (skip it with `make up DEMO=no`); Ctrl-C stops all
DEMO ?= yes
up: $(INSTALLED) generate certs
	$(BIN)/meshctl up $(if $(filter no,$(DEMO)),,--demo)

down: $(INSTALLED)
	$(BIN)/meshctl down

status: $(INSTALLED)
	$(BIN)/meshctl status

generate: $(INSTALLED)
	$(BIN)/meshctl generate

certs: $(INSTALLED)
	$(BIN)/meshctl certs

## test: lint, types, contracts, generated-code freshness, then the whole suite
test: check debian-packages
	$(BIN)/pytest -q

## debian-packages: what the tests drive from Debian, installed when missing (as root):
## Chromium, which loads the edge's /docs page headless, and rabbitmq-server, the broker
## of the event bus's RabbitMQ adapter (its tests run their own, never the system service)
debian-packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	test -x /usr/lib/rabbitmq/bin/rabbitmq-server || missing="$$missing rabbitmq-server"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's$$missing (the /docs browser test, the RabbitMQ adapter's tests)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
		else \
			echo "missing and this is not root:$$missing; the tests that drive them will be skipped"; \
		fi; \
	fi

check: $(INSTALLED) lint typecheck protolint breaking
	$(BIN)/meshctl generate --check

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

protolint: $(INSTALLED)
	$(BIN)/meshctl generate --stage-only
	$(BIN)/buf lint

## breaking: compare protos/ with the main branch (skipped where there is no main branch)
# The main branch's protos are built into an image with their own third-party imports
# staged, because third_party/ is generated, not committed.
breaking: $(INSTALLED)
	@if ! git rev-parse --verify --quiet main >/dev/null; then \
		echo "buf breaking: no main branch here, skipped"; exit 0; fi; \
	against=$$(mktemp -d); trap 'rm -rf "$$against"' EXIT; \
	git archive main protos buf.yaml | tar -x -C "$$against" && \
	$(BIN)/meshctl generate --stage-only --root "$$against" >/dev/null && \
	(cd "$$against" && $(CURDIR)/$(BIN)/buf build -o image.binpb) && \
	$(BIN)/buf breaking --against "$$against/image.binpb" && echo "buf breaking: no breaking change against main"

## bench: `python -m bench`, after installing what its edge rows need when missing: Debian's
## nghttp2-client (h2load, their load; as root) and, into the venv, the pinned HTTP
## servers they measure the edge's own against (bench/edge.py, CANDIDATE_PINS)
bench: $(INSTALLED)
	@if ! command -v h2load >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's nghttp2-client (h2load: the edge rows' load)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null || exit 1; \
		else \
			echo "h2load is missing and this is not root: the edge rows will be skipped"; \
		fi; \
	fi
	@pins=$$($(BIN)/python -c 'from bench.edge import missing_pins; print(*missing_pins())') || exit 1; \
	if [ -n "$$pins" ]; then \
		echo "installing the edge rows' candidate HTTP servers into $(VENV): $$pins"; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check $$pins || exit 1; \
	fi
	$(BIN)/python -m bench

clean:
	rm -rf .mesh third_party build .mypy_cache .ruff_cache .pytest_cache
