# The two commands a newcomer runs: `make demo` and `make test`. Each does its own set-up first,
# idempotently: tool venv, collections, Docker engine, base images.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
PY        ?= python3
STEP      := scripts/step.sh
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Plain, uncoloured output in CI logs; colour stays on in a terminal.
ifdef CI
export PY_COLORS := 0
export ANSIBLE_FORCE_COLOR := 0
export NO_COLOR := 1
endif

SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

.PHONY: help setup venv collections engine images rebuild-images vm vm-down lint app-test molecule vm-test vm-test-full vm-bench test demo demo-down clean

help: ## Show the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.installed

setup: ## Set up everything the other commands need (idempotent)
	@$(STEP) "tool venv (.venv, pinned requirements.txt)" $(MAKE) --no-print-directory venv
	@$(STEP) "collections (requirements.yml)" $(MAKE) --no-print-directory collections
	@$(STEP) "Docker engine" scripts/ensure-docker.sh
	@$(STEP) "base images (debootstrap + docker import)" scripts/build-images.sh
	@$(STEP) "VM image, Debian 12 (debootstrap + qemu-img)" scripts/build-vm-image.sh

collections: venv
	ansible-galaxy collection install -r requirements.yml

engine:
	scripts/ensure-docker.sh

images: engine ## Build the Debian 12/13 systemd base images if missing
	scripts/build-images.sh

rebuild-images: engine ## Build the base images again from scratch
	scripts/build-images.sh --rebuild

vm: ## Boot a Debian 12 VM and print an inventory and the README's commands for it
	@scripts/vm.sh up demo
	@scripts/vm.sh guide demo

vm-down: ## Stop the VM
	@scripts/vm.sh down demo

lint: venv ## yamllint, ansible-lint (production profile), ruff, promtool
	@$(STEP) "yamllint" yamllint --strict .
	@$(STEP) "ansible-lint (production profile)" ansible-lint --profile production
	@$(STEP) "ruff" bash -c 'ruff check . && ruff format --check .'
	@$(STEP) "promtool: alert rules, their unit tests, the rendered config" scripts/check-prometheus.sh

app-test: ## App tests against a real PostgreSQL
	@if [ -x scripts/test-app.sh ]; then $(STEP) "app tests (real PostgreSQL)" scripts/test-app.sh; fi

molecule: ## molecule test for every scenario (after set-up)
	@$(STEP) "remove leftovers of an interrupted run" scripts/clean-molecule.sh
	@$(STEP) "make demo recovers from stale molecule state" scripts/test-demo-recovery.sh
	@for s in $(SCENARIOS); do $(STEP) "molecule test -s $$s" molecule test -s $$s; done

vm-test: venv ## The README's server instructions on a real Debian 12 VM over SSH (tests/vm; in make test)
	@$(STEP) "real VM: the README's commands over SSH, check mode, reboot (tests/vm/run.sh)" tests/vm/run.sh

vm-test-full: venv ## vm-test plus the rest of the release tests and the platform checks
	@BM_VM_FULL=1 $(STEP) "real VM, full (tests/vm/run.sh)" tests/vm/run.sh

vm-bench: venv ## bench/ops_bench.py against a freshly converged VM (BM_VM_STRATEGY=linear: without Mitogen)
	@BM_VM_BENCH=1 $(STEP) "real VM, ops_bench (tests/vm/run.sh)" tests/vm/run.sh

# The real VM runs beside the molecule scenarios: they keep about one of the two cores busy (50-56 %
# of the machine over a whole make test, measured), the emulated VM the other. Its output follows
# theirs (and stays in .cache/vm-test.log); either failing fails make test.
test: ## Set-up, app tests, lint, molecule test for every scenario, and beside them the real VM (vm-test)
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory setup app-test lint; \
	mkdir -p .cache; \
	printf '\n==> real VM (make vm-test): started beside the molecule scenarios, output after them\n'; \
	$(MAKE) --no-print-directory vm-test >.cache/vm-test.log 2>&1 & vm=$$!; \
	status=0; $(MAKE) --no-print-directory molecule || status=$$?; \
	vm_status=0; wait $$vm || vm_status=$$?; \
	printf '\n==> real VM (make vm-test), its output (.cache/vm-test.log):\n'; cat .cache/vm-test.log; \
	if [ $$status -ne 0 ] || [ $$vm_status -ne 0 ]; then \
	  echo "==> make test: FAILED (molecule exit $$status, real VM exit $$vm_status)" >&2; exit 1; fi; \
	echo "==> make test: all steps passed in $$(( $$(date +%s) - start )) s"

demo: setup ## Bring the whole stack up in a local systemd container and print its URL
	@$(STEP) "converge the demo host (site.yml)" scripts/demo.sh

demo-down: ## Remove the demo's containers and molecule state (fine when nothing is up)
	@scripts/clean-molecule.sh default
	@$(call remove,.cache/demo)

# Say what goes: `make clean` and `make demo-down` report what they removed.
remove = for d in $(1); do if [ -e "$$d" ]; then echo "[clean] removing $$d"; rm -rf "$$d"; fi; done

clean: ## Remove what the project left: molecule containers, networks and state, VMs, venvs, caches
	@scripts/clean-molecule.sh
	@scripts/vm.sh down --all
	@$(call remove,$(VENV) .venv-app .cache .ansible .pytest_cache .ruff_cache app/.pytest_cache app/.ruff_cache)
