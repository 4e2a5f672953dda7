# fineprune: `make all` runs the whole fine-pruning defense, `make test` the test suite.
# Each stage is one binary over files on disk; make re-runs a stage only when its inputs, its
# own table in $(CONFIG) or its binary changed. Use CONFIG=other.toml for a side-by-side run.

SHELL := /bin/bash
CONFIG ?= pipeline.toml
CARGO ?= cargo
BIN := target/release
STAGES := synth ingest profile prune finetune evaluate report
BINS := $(addprefix $(BIN)/,$(STAGES) pipeline bench)
SOURCES := Cargo.toml Cargo.lock $(shell find crates -name '*.rs' -o -name Cargo.toml)
SETUP := target/.setup-done
DEBIAN_PACKAGES := libhdf5-dev pkg-config fonts-dejavu-core

.DEFAULT_GOAL := all
.PHONY: all $(STAGES) test bench clean setup

# --- setup: system packages, then the binaries -------------------------------------------
setup: $(SETUP)
$(SETUP):
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs); \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "setup: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	      || { echo "error: could not install $$missing with apt-get" >&2; exit 1; }; \
	  else \
	    echo "error: missing system packages: $$missing (install them, e.g. sudo apt-get install $$missing)" >&2; exit 1; \
	  fi; \
	fi
	@mkdir -p $(dir $@) && touch $@

$(BINS) &: $(SOURCES) | $(SETUP)
	$(CARGO) build --release --locked --bins

# --- configuration: resolved paths and one stamp per table -------------------------------
PIPELINE_GOALS := all $(STAGES)
ifneq ($(filter $(PIPELINE_GOALS),$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
VARS := target/make/$(subst /,_,$(abspath $(CONFIG))).mk
include $(VARS)
endif

$(VARS): $(CONFIG) $(BIN)/pipeline
	@mkdir -p $(dir $@)
	$(BIN)/pipeline make-vars --config $(CONFIG) --out $@

S := $(WORK)/config
# Stamps are rewritten only when their table changes; recreated if the work folder is gone.
$(S)/%.json: | $(BIN)/pipeline
	$(BIN)/pipeline make-vars --config $(CONFIG) --out $(VARS)

# --- the stages ---------------------------------------------------------------------------
INPUTS := $(DATA_VALID) $(DATA_TEST) $(DATA_POISONED) $(MODEL_WEIGHTS)
INGEST := $(WORK)/ingest/model.safetensors
PROFILE := $(WORK)/profile/activations.parquet
PRUNE := $(WORK)/prune/sweep.parquet
FINETUNE := $(WORK)/finetune/models.json
EVALUATE := $(WORK)/evaluate/summary.parquet
REPORT := $(REPORTS)/summary.csv

ifeq ($(DATA_MODE),synth)
$(INPUTS) &: $(S)/synth.json $(S)/model.json $(BIN)/synth
	@echo "*** No data at $(dir $(DATA_VALID)) or $(MODEL_WEIGHTS): using the built-in SYNTHETIC benchmark ***"
	$(BIN)/synth --config $(CONFIG)
endif

$(INGEST): $(INPUTS) $(S)/data.json $(S)/model.json $(BIN)/ingest
	$(BIN)/ingest --config $(CONFIG)

$(PROFILE): $(INGEST) $(S)/profile.json $(BIN)/profile
	$(BIN)/profile --config $(CONFIG)

$(PRUNE): $(PROFILE) $(S)/prune.json $(BIN)/prune
	$(BIN)/prune --config $(CONFIG)

$(FINETUNE): $(PRUNE) $(S)/finetune.json $(BIN)/finetune
	$(BIN)/finetune --config $(CONFIG)

$(EVALUATE): $(PRUNE) $(FINETUNE) $(S)/evaluate.json $(BIN)/evaluate
	$(BIN)/evaluate --config $(CONFIG)

$(REPORT): $(EVALUATE) $(BIN)/report
	$(BIN)/report --config $(CONFIG)

synth: $(INPUTS)
ingest: $(INGEST)
profile: $(PROFILE)
prune: $(PRUNE)
finetune: $(FINETUNE)
evaluate: $(EVALUATE)
report: $(REPORT)
all: $(REPORT)
	@echo "fineprune: reports in $(REPORTS)"

# --- tests, benchmark, cleaning -------------------------------------------------------------
test: $(BINS)
	$(CARGO) test --release --locked --workspace
	bash tests/make_incremental.sh

bench: $(BINS)
	$(BIN)/bench

clean:
	-@test -f target/make/$(subst /,_,$(abspath $(CONFIG))).mk && \
	  eval "$$(sed -n 's/^\(WORK\|REPORTS\) := \(.*\)/\1=\2/p' target/make/$(subst /,_,$(abspath $(CONFIG))).mk)" && \
	  rm -rf "$$WORK" "$$REPORTS"
	rm -rf work reports target/make
