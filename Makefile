# fineprune: `make all` runs the whole fine-pruning defense, `make test` the test suite.
# Each stage is one binary over files on disk; make re-runs a stage only when its inputs, its
# own table in $(CONFIG) or its binary's content changed. Use CONFIG=other.toml for a side-by-side run.

SHELL := /bin/bash
CONFIG ?= pipeline.toml
CARGO ?= cargo
BIN := target/release
STAGES := synth ingest profile prune finetune scan evaluate report
BINS := $(addprefix $(BIN)/,$(STAGES) predict pipeline bench)
SOURCES := Cargo.toml Cargo.lock $(shell find crates -name '*.rs' -o -name Cargo.toml)
SETUP := target/.setup-done
DEBIAN_PACKAGES := libhdf5-dev pkg-config fonts-dejavu-core

.DEFAULT_GOAL := all
.PHONY: all $(STAGES) test bench clean setup zoo

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
	@v=$$(pkg-config --modversion hdf5 2>/dev/null); \
	if [ -n "$$v" ] && [ "$$(printf '%s\n' 1.10.5 "$$v" | sort -V | head -1)" != 1.10.5 ]; then \
	  echo "error: HDF5 $$v found; fineprune needs HDF5 1.10.5 or newer (libhdf5-dev)" >&2; exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

# The build is an included makefile's recipe (see below): make builds before it reads the
# stage rules and then restarts. Each built binary's SHA-256 goes to $(CODE)/<name>, rewritten
# only when the binary's bytes changed, and the stage rules depend on those stamps rather than
# on the binaries' times: an edit re-runs only the stages whose binary it changed (cargo
# relinks every binary above a crate it rebuilds; most come out byte for byte the same). The
# binaries are touched last, so none looks older than the sources and `make -q` agrees.
CODE := target/make/code
BUILD := target/make/build.mk
$(BUILD): $(SOURCES) | $(SETUP)
	$(CARGO) build --release --locked --bins
	@mkdir -p $(CODE) && for b in $(STAGES); do \
	  h=$$(sha256sum < target/release/$$b | cut -c1-64); \
	  [ "$$(cat $(CODE)/$$b 2>/dev/null)" = "$$h" ] || echo "$$h" > $(CODE)/$$b; \
	done
	@echo '# the binaries were built; their content stamps are under $(CODE)' > $@
	@touch $(BINS)
$(BINS): $(BUILD) ;

# --- configuration: checked, stamped and linked at the start of every run ------------------
# `pipeline make-vars` (milliseconds) checks $(CONFIG), rewrites the stamps of the tables and
# inputs whose content changed (in the work folder: switching configurations over one work
# folder re-runs what differs), and points short links under target/make/<id>/ at the work
# folder, the reports and the inputs, so make sees no spaces whatever the paths hold. <id> is
# a hash of the configuration's real path: two configurations never share one.
PIPELINE_GOALS := all $(STAGES)
CONFIG_ID = $(shell realpath -m -- '$(CONFIG)' | sha256sum | cut -c1-16)
VARS = target/make/$(CONFIG_ID).mk
MAKE_VARS = $(BIN)/pipeline make-vars --config '$(CONFIG)' --out $(VARS)
ifneq ($(filter $(PIPELINE_GOALS),$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
# A content stamp gone (target/make removed by hand) rebuilds them all.
ifneq ($(filter-out $(wildcard $(CODE)/*),$(addprefix $(CODE)/,$(STAGES))),)
$(shell rm -f $(BUILD))
endif
include $(BUILD)
CONFIG_ID := $(CONFIG_ID)
ifneq ($(wildcard $(BIN)/pipeline),)
MAKE_VARS_ERROR := $(shell mkdir -p target/make; err=$$(RUST_LOG=error $(MAKE_VARS) 2>&1 >/dev/null) || echo "$$err" | tail -1)
ifneq ($(MAKE_VARS_ERROR),)
$(error $(MAKE_VARS_ERROR))
endif
endif
include $(VARS)
endif

# The first run (no binary yet): build, then make restarts with the variables.
$(VARS): $(BIN)/pipeline
	@mkdir -p $(dir $@)
	$(MAKE_VARS)

S = $(WORK)/config

# --- the stages ---------------------------------------------------------------------------
INGEST = $(WORK)/ingest/model.safetensors
PROFILE = $(WORK)/profile/activations.parquet
PRUNE = $(WORK)/prune/sweep.parquet
FINETUNE = $(WORK)/finetune/models.json
SCAN = $(WORK)/scan/summary.parquet
EVALUATE = $(WORK)/evaluate/summary.parquet
REPORT = $(REPORTS)/summary.csv
RUN = --config '$(CONFIG)'

ifeq ($(DATA_MODE),synth)
# synth writes the inputs (the links point at them).
$(INPUTS) &: $(S)/synth.json $(S)/model.json $(CODE)/synth
	@echo "*** No data for $(CONFIG): using the built-in SYNTHETIC benchmark ***"
	$(BIN)/synth $(RUN)
INGEST_INPUTS = $(INPUTS)
else
# User data: its content hashes, rewritten only when the content changed.
INGEST_INPUTS = $(INPUT_STAMPS)
endif

$(INGEST): $(INGEST_INPUTS) $(S)/data.json $(S)/model.json $(CODE)/ingest
	$(BIN)/ingest $(RUN)

$(PROFILE): $(INGEST) $(S)/profile.json $(CODE)/profile
	$(BIN)/profile $(RUN)

$(PRUNE): $(PROFILE) $(S)/prune.json $(CODE)/prune
	$(BIN)/prune $(RUN)

$(FINETUNE): $(PRUNE) $(S)/finetune.json $(CODE)/finetune
	$(BIN)/finetune $(RUN)

$(SCAN): $(PRUNE) $(FINETUNE) $(S)/scan.json $(CODE)/scan
	$(BIN)/scan $(RUN)

$(EVALUATE): $(PRUNE) $(FINETUNE) $(S)/evaluate.json $(CODE)/evaluate
	$(BIN)/evaluate $(RUN)

$(REPORT): $(SCAN) $(EVALUATE) $(S)/work.json $(CODE)/report
	$(BIN)/report $(RUN)

synth: $(if $(filter synth,$(DATA_MODE)),$(INPUTS))
ingest: $(INGEST)
profile: $(PROFILE)
prune: $(PRUNE)
finetune: $(FINETUNE)
scan: $(SCAN)
evaluate: $(EVALUATE)
report: $(REPORT)
all: $(REPORT)
	@echo 'fineprune: reports in $(REPORTS_DIR)'

# --- a zoo of networks, run by Snakemake ---------------------------------------------------
# `make zoo ZOO=zoo.toml` defends every network the zoo file lists (built-in: zoo/builtin.toml)
# through workflow/Snakefile, then writes $(ZOO_REPORTS)/zoo.csv and the zoo plot. Snakemake
# is installed into target/snakemake the first time. ZOO_PROFILE picks where jobs run
# (workflow/profiles/local, slurm, cluster-generic); ZOO_THREADS is each job's cores.
ZOO ?= zoo/builtin.toml
ZOO_REPORTS ?= reports/zoo
ZOO_PROFILE ?= workflow/profiles/local
ZOO_THREADS ?= 1
SNAKEMAKE_ENV := target/snakemake
SNAKEMAKE := $(SNAKEMAKE_ENV)/bin/snakemake
SNAKEMAKE_PACKAGES := snakemake snakemake-executor-plugin-cluster-generic

$(SNAKEMAKE):
	@command -v python3 >/dev/null || { echo "error: python3 not found: install Python 3.11 or newer for make zoo" >&2; exit 1; }
	@rm -rf $(SNAKEMAKE_ENV)
	@python3 -m venv $(SNAKEMAKE_ENV) || { echo "error: python3 -m venv failed: install python3-venv" >&2; exit 1; }
	@echo "zoo: installing $(SNAKEMAKE_PACKAGES) into $(SNAKEMAKE_ENV) (once)"
	@$(SNAKEMAKE_ENV)/bin/pip install -q --disable-pip-version-check $(SNAKEMAKE_PACKAGES) \
	  || { rm -rf $(SNAKEMAKE_ENV); echo "error: could not install $(SNAKEMAKE_PACKAGES) from the package index" >&2; exit 1; }

ZOO_ID = $(shell realpath -m -- '$(ZOO)' | sha256sum | cut -c1-16)
zoo: $(BUILD) $(SNAKEMAKE)
	@mkdir -p target/zoo '$(ZOO_REPORTS)'
	$(BIN)/pipeline zoo-plan --zoo '$(ZOO)' --out target/zoo/$(ZOO_ID).json
	-$(SNAKEMAKE) --snakefile workflow/Snakefile --profile $(ZOO_PROFILE) \
	  --config plan=target/zoo/$(ZOO_ID).json logs="$$(realpath -m -- '$(ZOO_REPORTS)')/logs" bin="$$(realpath $(BIN))" code="$$(realpath $(CODE))" threads=$(ZOO_THREADS)
	$(BIN)/pipeline zoo-report --plan target/zoo/$(ZOO_ID).json --logs '$(ZOO_REPORTS)/logs' --code $(CODE) --output-dir '$(ZOO_REPORTS)' --threads $(ZOO_THREADS)

# --- tests, benchmark, cleaning -------------------------------------------------------------
test: $(BUILD)
	$(CARGO) test --release --locked --workspace
	bash tests/make_incremental.sh
	bash tests/make_kill.sh
	bash tests/python.sh
	bash tests/serve.sh
	bash tests/zoo.sh
	bash tests/zoo_scale.sh 200

# The Python environment first: bench times G from Python beside predict.
bench: $(BUILD)
	bash tests/venv.sh
	$(BIN)/bench

# Removes what the pipeline wrote for $(CONFIG) (stage files, report files, make's links),
# never a folder that holds anything else.
clean: $(BIN)/pipeline
	$(BIN)/pipeline clean $(RUN)
	rm -rf target/make/$(CONFIG_ID) target/make/$(CONFIG_ID).mk
