# moe-operator — the two commands on a fresh machine are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup rig up down status demo test test-unit test-cluster conformance simulate lint crds clean

setup:            ## Python venv with the project and dev tools (pinned, idempotent)
	hack/setup-python

rig:              ## build the control plane, etcd, kwok, LWS, kubectl, helm from Go modules (cached by version)
	hack/build-rig

up: setup rig     ## start the local control plane with simulated H200/B200/Ascend/CPU node pools
	hack/testcluster up

down:             ## stop the local control plane (only the processes it started)
	hack/testcluster down

status:
	hack/testcluster status

demo: setup rig   ## the main job: rig up, operator running, examples applied, result printed
	hack/demo

test:             ## everything CI runs: lint, unit, conformance and cluster tiers
	hack/test

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-cluster: setup rig
	$(PY) -m pytest -q tests/cluster

crds: setup       ## regenerate crds/, the chart's CRDs and docs/api.md from the API models
	.venv/bin/moe-operator crds --chart charts/moe-operator --docs docs/api.md

conformance: setup  ## SGLang 0.5.23's own parser and collectors check our argv, flag table and metrics
	hack/setup-sglang
	$(PY) -m pytest -q tests/conformance

simulate: setup   ## the autoscaling benchmark (docs/benchmarks.md)
	$(PY) bench/autoscale.py --jobs 2 --out bench/results/autoscale.json

lint: setup
	.venv/bin/ruff check operator tests hack
	.venv/bin/mypy

clean: down
	rm -rf .testcluster/gobuild
