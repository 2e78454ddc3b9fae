# Nattery: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV_VERSION ?= 0.13.8
BENCHES := bench-bridge bench-ingest bench-mqtt_ack bench-auth bench-trading bench-integration bench-analytics bench-alerts

.PHONY: .uv
.uv: ## Check that uv is installed (installs it with pip when missing)
	@command -v uv >/dev/null 2>&1 || { \
		echo "uv not found: installing uv==$(UV_VERSION) with pip"; \
		{ command -v pip >/dev/null 2>&1 && pip install --quiet "uv==$(UV_VERSION)"; } \
		|| python3 -m pip install --quiet "uv==$(UV_VERSION)" \
		|| python3 -m pip install --quiet --break-system-packages "uv==$(UV_VERSION)"; }

.PHONY: install
install: .uv ## Install every workspace package and the dev tools (uv sync --all-packages --frozen)
	uv sync --all-packages --frozen

.PHONY: infra
infra: ## Install (apt) and start the infrastructure: postgres, redis, rabbitmq, mosquitto, influxdb, nginx
	@bash infrastructure/local/setup.sh

.PHONY: run
run: install infra ## Run everything: migrations, the five services, the gateway and the simulated fleet
	@bash infrastructure/local/run.sh

.PHONY: test
test: install infra ## Run the whole test suite against real servers
	NATTERY_TEST_STRICT=1 uv run pytest

.PHONY: bench
bench: $(BENCHES) ## Run the benchmarks bench-{bridge,ingest,mqtt_ack,auth,trading,integration,analytics,alerts} (bench/*.py; not in `make test`)

.PHONY: $(BENCHES)
$(BENCHES): bench-%: install infra ## Run one benchmark: bench-bridge, bench-ingest, bench-mqtt_ack, bench-auth, bench-trading, bench-integration, bench-analytics, bench-alerts
	@if [ -f bench/$*.py ]; then uv run python bench/$*.py; else echo "bench/$*.py does not exist yet: skipped"; fi

.PHONY: lint
lint: ## Lint, check formatting and type-check
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy -p nattery_contracts -p nattery_data -p nattery_shared -p nattery_device -p nattery_trading -p nattery_analytics -p nattery_user -p nattery_integration -p nattery_bridge -p nattery_sim

.PHONY: format
format: ## Format the code and apply safe lint fixes
	uv run ruff format .
	uv run ruff check --fix .

.PHONY: stop
stop: ## Stop what `make run` started and the project's own mosquitto, influxdb and nginx
	@bash infrastructure/local/stop.sh

.PHONY: clean
clean: stop ## Stop, then delete local state (var/) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help
help: ## Show this help (default target)
	@grep -hE '^[A-Za-z0-9_.%-]+:.*?## ' $(MAKEFILE_LIST) | grep -v '^\.uv' | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "\033[36m  %-14s\033[0m %s\n", $$1, $$2}'
