# orderlake — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
ORDERLAKE_CACHE ?= $(HOME)/.cache/orderlake
export ORDERLAKE_CACHE
# The cargo target dir lives outside the clone so CI and fresh clones reuse the ~10 min build.
export CARGO_TARGET_DIR ?= $(ORDERLAKE_CACHE)/target
BIN := $(CARGO_TARGET_DIR)/debug/orderlake
AZURITE_KEY := Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==

.PHONY: demo test bench bench-pii bench-replay install services-up services-down build unit it lint clean-demo notebooks fuzz

install:
	bash infra/local/install.sh

services-up: install
	bash infra/local/start.sh

services-down:
	bash infra/local/stop.sh

build:
	cargo build --bin orderlake

# Runs the whole job on the local stack: sample data → Kafka → Delta on Azurite → MongoDB, then a summary.
demo: services-up build
	bash infra/local/demo.sh

# JupyterLab on notebooks/ over the demo lake (run `make demo` first); http://127.0.0.1:8888.
notebooks: services-up
	source infra/local/env.sh && use_local_stack && \
	  ORDERLAKE_LAKE=$${DEMO_LAKE:-az://orderlake-demo/lake} "$$ORDERLAKE_NB_VENV/bin/jupyter" lab \
	  --ip 127.0.0.1 --no-browser --notebook-dir notebooks

# The benchmark (docs/performance.md) from a release build; `make bench ARGS="--events 50000"` for a quick one.
bench: services-up
	cargo build --release --bin orderlake
	bash infra/local/bench.sh $(ARGS)

# What the CDC PII rules cost the decoder (no services needed): messages/s with and without them.
bench-pii:
	cargo bench --bench pii

# What a keyed table's live files cost each batch (no services needed): per-batch time against
# the table's file count, and the cost per live file.
bench-replay:
	cargo bench --bench replay

# Coverage-guided fuzzing of the decoders and PII rules (nightly Rust and cargo-fuzz; fuzz/README.md):
# FUZZ_SECONDS per target (default 300). A finding is left in fuzz/artifacts/<target>/; inputs that
# reach new code are added to fuzz/regressions/, which `make test` replays on stable Rust.
fuzz:
	@cargo +nightly --version >/dev/null 2>&1 || { echo "make fuzz needs the nightly toolchain: rustup toolchain install nightly"; exit 2; }
	@cargo +nightly fuzz --version >/dev/null 2>&1 || { echo "make fuzz needs cargo-fuzz: cargo install cargo-fuzz"; exit 2; }
	python3 fuzz/seeds.py
	@# The same dependency versions as the main build; cargo adds libfuzzer-sys to the copy.
	[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
	@# New inputs go to corpus/ (not committed); regressions/ (committed, replayed by `make test`)
	@# seeds the run and afterwards takes in the inputs that reach code it did not: commit them.
	cd fuzz && for t in decode redact; do \
	  CARGO_TARGET_DIR=$(ORDERLAKE_CACHE)/fuzz-target cargo +nightly fuzz run $$t -s none --dev corpus/$$t regressions/$$t -- \
	    -max_total_time=$${FUZZ_SECONDS:-300} || exit 1; \
	  CARGO_TARGET_DIR=$(ORDERLAKE_CACHE)/fuzz-target cargo +nightly fuzz run $$t -s none --dev regressions/$$t corpus/$$t -- \
	    -merge=1 -use_counters=0 2>&1 | grep -E 'MERGE-OUTER: [0-9]+ new files' || exit 1; \
	done
	@echo "fuzz/regressions: $$(git status --short --untracked-files=all fuzz/regressions | wc -l) new inputs to commit"

# Installs and starts what the tests need, runs every test, stops the services it started even on failure.
test: install
	@bash infra/local/start.sh; \
	status=0; \
	$(MAKE) --no-print-directory lint || status=$$?; \
	if [ $$status -eq 0 ]; then cargo test --all-targets 2>&1 | tee $(ORDERLAKE_CACHE)/logs/test.log; status=$${PIPESTATUS[0]}; fi; \
	bash infra/local/stop.sh; \
	exit $$status

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
