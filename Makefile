# driftless — the two commands that matter: `make demo` and `make test`.
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: all build test test-chart demo bench bench-flux bench-events bench-replicas soak bench-bucket bench-apply bench-verify fuzz fuzz-list crds lint up down platform-status testbin clean

all: build

build:
	$(CARGO) build

## test: build and install whatever is missing, start the platform, run clippy and every test.
test:
	hack/test

## test-chart: only the Helm chart's tests (lint, render, server-side validation, install) on the platform.
test-chart:
	hack/test-chart

## demo: a local platform with driftless's CRDs and an example OCIRepository.
demo:
	hack/demo

## bench: N = 100 and 1000 OCIRepositories against the local platform (release build).
bench:
	hack/platform up
	BENCH_N=100 $(CARGO) bench --bench oci_scale
	BENCH_N=1000 $(CARGO) bench --bench oci_scale

## bench-bucket: one Bucket of 100,000 small objects, then one of 2 GiB (release build).
bench-bucket:
	hack/platform up
	BENCH_BUCKET=small $(CARGO) bench --bench bucket_scale
	BENCH_BUCKET=large $(CARGO) bench --bench bucket_scale

## bench-apply: 1 Kustomization of 1,000 ConfigMaps, then 100 of 10, then 200 Secrets plain vs
## SOPS-encrypted (release build).
bench-apply:
	hack/platform up
	BENCH_APPLY=wide $(CARGO) bench --bench kustomize_scale
	BENCH_APPLY=many $(CARGO) bench --bench kustomize_scale
	BENCH_APPLY=sops $(CARGO) bench --bench kustomize_scale

## bench-flux: Flux's controllers and driftless's side by side on the same platform, every
## scenario of issue 21, then all of them as one table (hack/bench-table): 1,000 OCIRepositories
## on one artifact and on 50, 5,000 on one; 10,000 in one namespace (then two shards a side) and
## across 100 namespaces; 2,000 created before the controllers start, --concurrent=1, then two
## shards a side (where the controller, not the API server, bounds the time); a Bucket of 10,000 objects; 1,000 Kustomizations of flux-benchmark's
## shape, then 100 kustomize overlays. The controller measured is the release build; the
## harness that drives and watches is built in the dev profile (it is not measured, and an
## optimised harness would cost a whole-program optimised link per bench).
BENCH_TABLE ?= $(CURDIR)/target/bench-flux.tsv
BENCH_FLUX = BENCH_TABLE=$(BENCH_TABLE) DRIFTLESS_BIN=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/release/driftless $(CARGO) bench --locked --profile dev
bench-flux:
	hack/platform up
	$(CARGO) build --locked --release
	mkdir -p $(dir $(BENCH_TABLE)) && rm -f $(BENCH_TABLE)
	BENCH_N=1000 $(BENCH_FLUX) --bench flux_side_by_side
	BENCH_N=1000 BENCH_ARTIFACTS=50 $(BENCH_FLUX) --bench flux_side_by_side
	BENCH_N=5000 $(BENCH_FLUX) --bench flux_side_by_side
	BENCH_N=10000 BENCH_SHARDS=2 BENCH_STEADY=0 $(BENCH_FLUX) --bench flux_side_by_side
	BENCH_N=10000 BENCH_NAMESPACES=100 BENCH_STEADY=0 $(BENCH_FLUX) --bench flux_side_by_side
	BENCH_N=2000 BENCH_PRECREATE=1 BENCH_CONCURRENT=1 BENCH_SHARDS=2 BENCH_STEADY=0 $(BENCH_FLUX) --bench flux_side_by_side
	BENCH_N=10000 $(BENCH_FLUX) --bench flux_bucket_side_by_side
	BENCH_SHAPE=benchmark BENCH_N=1000 $(BENCH_FLUX) --bench flux_kustomize_side_by_side
	BENCH_SHAPE=overlays BENCH_N=100 $(BENCH_FLUX) --bench flux_kustomize_side_by_side
	@echo; echo "make bench-flux, $$(git rev-parse --short HEAD), $$(date -u +%F):"; hack/bench-table $(BENCH_TABLE)

## bench-events: push → new revision and push → applied, p50/p95 over 50 pushes, with registry
## events (the receiver) and on a 10s interval (release build).
bench-events:
	hack/platform up
	BENCH_PUSHES=50 $(CARGO) bench --bench events

## bench-replicas: 1,000 OCIRepositories on 10 artifacts: storage on disk vs one copy per
## object, a new replica's time to get in step, a killed leader's takeover (release build).
bench-replicas:
	hack/platform up
	BENCH_N=1000 BENCH_ARTIFACTS=10 $(CARGO) bench --bench replicas

## soak: rounds of every fault kind (tests/support/soak.rs) for SOAK_MINUTES (default 30) with
## every invariant checked throughout; prints the table, fails on a violation (release build).
soak:
	hack/platform up
	SOAK_MINUTES=$${SOAK_MINUTES:-30} $(CARGO) bench --bench soak

## bench-verify: 100 OCIRepositories without verification, with a cosign key, keyless (release build).
bench-verify:
	hack/platform up
	hack/testbin.sh cosign3
	BENCH_N=100 $(CARGO) bench --bench verify_scale

## fuzz: every fuzz target for FUZZ_SECONDS (default 180) from fuzz/seeds; FUZZ_TARGETS=a,b selects.
## Installs cargo-fuzz (nightly) into ~/.cache/driftless/tools when missing; fails on a crash.
fuzz:
	hack/fuzz

fuzz-list:
	hack/fuzz list

## crds: regenerate crds/ from the Rust types, and the Helm chart's copy (commit the result).
crds:
	$(CARGO) run --quiet -- crds --dir crds
	hack/sync-chart-crds

lint:
	$(CARGO) fmt --all -- --check
	hack/module-graph
	$(CARGO) clippy --all-targets -- -D warnings

## up / down: start or stop the test platform by hand (state in .platform/).
up:
	hack/platform up

down:
	hack/platform down

platform-status:
	hack/platform status

## testbin: build kube-apiserver, kubectl, etcd, kustomize and helm into the cache outside the clone.
testbin:
	hack/testbin.sh all

clean:
	hack/platform down
	$(CARGO) clean
