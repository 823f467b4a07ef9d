# The README's quick start is exactly `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := data
DEMO_MIXED := -p examples/policies/navigator_bc -p builtin://navigator --npc builtin://random --candidate-share 0.5 \
	--cross-play --vor builtin://noop --episodes 4
DEMO_POLICIES := -p examples/policies/navigator_bc -p examples/policies/navigator_lstm -p builtin://navigator -p builtin://random --checkpoints all

.PHONY: demo test test-services lint format clean bench image image-base image-tools test-image

# torch is pinned here (not in pyproject) so pip takes the local CPU build instead of a multi-GB CUDA one.
# pufferlib-core (mettagrid's trainable policies: lstm, stateless, puffer) pins torch==2.9.0 in its metadata,
# which would replace our torch with a multi-GB CUDA build: it goes in with --no-deps, after the
# `mettagrid-policies` extra has installed what it really needs on top of mettagrid (README, "Policies").
PUFFERLIB_VERSION := 3.0.23
# cogames' own scoring (`metta_alo.scoring`, shipped in the cogames wheel) is what tests/test_vor.py checks our value
# over replacement against; only its pure-Python scoring is imported, so it goes in without its dependencies.
COGAMES_VERSION := 0.27.3
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,mettagrid-policies]"
	$(BIN)/pip install --quiet --no-deps pufferlib-core==$(PUFFERLIB_VERSION)
	$(BIN)/pip install --quiet --no-deps cogames==$(COGAMES_VERSION)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/policy-evaluator run $(DEMO_POLICIES) --suite navigation --data-dir $(DEMO_DIR) --run-name demo
	$(BIN)/policy-evaluator summary $(DEMO_DIR)/demo/report.json
	@echo "Mixed line-ups on the multi_agent suite: the example MLP and the navigator beside random co-players, and"
	@echo "cross-play between them (ratings, value over replacement against a noop pool):"
	$(BIN)/policy-evaluator run $(DEMO_MIXED) --suite multi_agent --data-dir $(DEMO_DIR) --run-name demo_mixed > /dev/null
	$(BIN)/policy-evaluator summary $(DEMO_DIR)/demo_mixed/report.json
	@echo "The page: $(DEMO_DIR)/demo/report.html (open it in a browser), or: $(BIN)/policy-evaluator view $(DEMO_DIR)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest sessions: the multi-node `ray.cluster_utils.Cluster` tests need their own Ray, everything
# else shares one Ray instance per session.
# The tests start a real PostgreSQL 15 (Debian's `postgresql-15`) and a headless chromium (Debian's `chromium`,
# driven by Playwright) themselves; both are installed here if missing.
test: $(STAMP) lint test-services
	$(BIN)/python -m pytest -m "not cluster and not image" -q
	$(BIN)/python -m pytest -m cluster -q

test-services:
	@missing=""; \
	{ command -v pg_config >/dev/null && test -x "$$(pg_config --bindir)/initdb"; } || missing="postgresql-15"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The container image (README, "Container image"). `image` builds the Dockerfile's production target (IMAGE_TARGET,
# VARIANT=cpu or gpu) with Docker, or with buildah where no Docker daemon answers; `image-base` builds a local
# stand-in for the rayproject/ray base where it cannot be pulled (image/ray-base.Containerfile); TORCH_INDEX_URL
# and PIP_INDEX_URL, when set, become build arguments. `test-image` builds the base, the production and the
# development images and runs them (tests/image, marker `image`, which `test` leaves out). Without a Docker daemon, buildah, podman, runc, mmdebstrap and
# podman-compose are installed from Debian if missing.
VARIANT ?= cpu
IMAGE_TARGET ?= production
IMAGE_BUILD := TORCH_INDEX_URL="$(TORCH_INDEX_URL)" PIP_INDEX_URL="$(PIP_INDEX_URL)" $(PYTHON) image/build.py

image: image-tools
	$(IMAGE_BUILD) image --target $(IMAGE_TARGET) --variant $(VARIANT)

image-base: image-tools
	$(IMAGE_BUILD) base

test-image: $(STAMP) image-base image
	$(IMAGE_BUILD) image --target development --variant $(VARIANT)
	IMAGE_TESTS=required $(BIN)/python -m pytest tests/image -m image -q
	@cat build/image/measurements.json

image-tools:
	@if ! docker info >/dev/null 2>&1; then \
		missing=""; \
		for tool in buildah podman runc mmdebstrap podman-compose; do \
			command -v $$tool >/dev/null || missing="$$missing $$tool"; \
		done; \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				$$missing >/dev/null; \
		fi; \
	fi

# Benchmarks (BENCHMARKS.md), figures and same-run ratios: bench.throughput (runner, Ray, tiny run),
# bench.recurrent (mettagrid's `lstm` class batched vs the example MLP and vs mettagrid's per-agent path),
# bench.packing (units that pack environments), bench.scheduler (queue logic at 100,000 units), bench.scale
# (100 / 1,000 / 10,000 checkpoints through the CLI, ~20 min), bench.results_store (the results database
# against the old per-episode files), bench.adaptive (--target-ci against fixed episodes). Every one runs;
# the target exits 1 when any target is missed beyond its noise margin. `python -m bench.breakdown` shows
# where the time goes.
bench: $(STAMP)
	@status=0; \
	for module in bench.throughput bench.recurrent bench.packing bench.scheduler bench.scale \
			bench.results_store bench.adaptive bench.mixed bench.cross_play; do \
		$(BIN)/python -m $$module || status=1; \
	done; \
	exit $$status

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
