# Gatewayz Observability — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV = $(shell scripts/ensure-uv.sh)
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target with what it does
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: ## Install uv (if missing), Python 3.11 deps (uv.lock), Debian's prometheus and docker-compose
	@$(UV) sync --frozen --python 3.11
	@scripts/ensure-prometheus.sh
	@scripts/ensure-tools.sh

.PHONY: run
run: install ## Start gateway, admin, log-shipper and Prometheus on localhost (Ctrl-C stops all)
	@$(UV) run --frozen python -m gatewayz_tools.stack

.PHONY: verify
verify: install ## Run the SPEC §10 checklist against a running stack (URLs from *_URL env; ARGS="--skip loki")
	@$(UV) run --frozen python -m gatewayz_tools.verify $(ARGS)

.PHONY: traffic
traffic: install ## Send bounded synthetic traffic through the gateway (ARGS="--requests 2000")
	@$(UV) run --frozen python -m gatewayz_tools.traffic $(ARGS)

.PHONY: test
test: install ## Run the whole test suite (unit + integration); installs Debian's postgresql and redis-server
	@scripts/ensure-databases.sh
	@$(UV) run --frozen pytest $(PYTEST_ARGS)

.PHONY: bench
bench: install ## Short run of every benchmark (instrumentation, gateway, shipper, memory), one table
	@$(UV) run --frozen python bench/run_all.py

.PHONY: lint
lint: install ## ruff check + format check, mypy --strict on every src/
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy shared/src services/gateway/src services/admin/src services/log-shipper/src tools/src

.PHONY: fmt
fmt: install ## Apply ruff fixes and formatting
	@$(UV) run --frozen ruff check --fix .
	@$(UV) run --frozen ruff format .

.PHONY: dashboards
dashboards: install ## Regenerate deploy/grafana/dashboards/*.json from the query catalog
	@$(UV) run --frozen python -m telemetry.dashboards deploy/grafana/dashboards

.PHONY: deploy-check
deploy-check: install ## Validate deploy/: promtool config + rule tests, compose config, dashboards current
	@promtool check config deploy/prometheus/prometheus.yml
	@promtool check config deploy/prometheus/railway/prometheus.yml
	@promtool test rules deploy/prometheus/tests/*.yml
	@docker-compose --env-file .env.example -f docker-compose.yml config -q
	@$(UV) run --frozen python -m telemetry.dashboards deploy/grafana/dashboards --check

.PHONY: reliability
reliability: install ## Full reliability suite: 1,000,000 lines through Loki faults, 10-minute soak (~25 min)
	@mkdir -p data
	@RELIABILITY_FULL=1 RELIABILITY_RESULTS=$${RELIABILITY_RESULTS:-data/reliability-results.jsonl} \
		$(UV) run --frozen pytest tests/reliability -s $(PYTEST_ARGS)
