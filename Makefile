# labctl — the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs; nothing is assumed to be on the machine
# except Debian 12 with Python >= 3.11, Go, Rust (rustup) and g++.

SHELL := /bin/bash
ROOT  := $(CURDIR)
VENV  := $(ROOT)/.venv
PY    := $(VENV)/bin/python
BIN   := $(ROOT)/build/bin

# ---- Release build settings for the workloads: the one place they are written down.
# Reproducible: same source revision + same toolchains => bit-identical binaries,
# whatever the checkout path (see docs/workloads.md).
GO          ?= go
GOFLAGS_REL := -trimpath -buildvcs=false -ldflags=-buildid=
CARGO       ?= cargo
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
RUSTFLAGS_REL := --remap-path-prefix=$(ROOT)=/labctl --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo
CXX         ?= g++
CXXFLAGS_REL := -std=c++20 -O2 -Wall -Wextra -Werror -pthread \
                -ffile-prefix-map=$(ROOT)=/labctl -fno-ident
LDFLAGS_REL := -pthread -Wl,--build-id=none

APT_PACKAGES := openssh-server influxdb victoria-metrics postgresql chromium \
                liburing-dev libnuma-dev numactl linux-perf iproute2 sqlite3 curl \
                build-essential procps

.PHONY: help deps venv workloads lint test demo bench-workloads bench-provision bench-ship clean

help:
	@echo "make demo   - run the quick gc-tail-latency experiment on this machine"
	@echo "make test   - install everything and run the whole test suite"

# Debian packages (only when root; otherwise say what is missing).
deps:
	@bash scripts/install-deps.sh $(APT_PACKAGES)

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# ---- workloads -> build/bin/<workload>-<lang> and build/bin/loadgen
workloads: $(BIN)/riskd-go $(BIN)/riskd-rust $(BIN)/riskd-cpp $(BIN)/loadgen

$(BIN)/riskd-go: Makefile $(shell find workloads/riskd/go -name '*.go' -o -name go.mod -o -name go.sum 2>/dev/null)
	@mkdir -p $(BIN)
	cd workloads/riskd/go && CGO_ENABLED=0 $(GO) build $(GOFLAGS_REL) -o $@ .

$(BIN)/riskd-rust: Makefile $(shell find workloads/riskd/rust/src workloads/riskd/rust/Cargo.* 2>/dev/null)
	@mkdir -p $(BIN)
	cd workloads/riskd/rust && RUSTFLAGS="$(RUSTFLAGS_REL)" $(CARGO) build -q --release --locked \
	    --target-dir $(ROOT)/build/target/riskd-rust
	cp build/target/riskd-rust/release/riskd-rust $@

$(BIN)/riskd-cpp: Makefile $(sort $(wildcard workloads/riskd/cpp/*.cpp workloads/riskd/cpp/*.hpp))
	@mkdir -p $(BIN)
	$(CXX) $(CXXFLAGS_REL) -o $@ $(sort $(wildcard workloads/riskd/cpp/*.cpp)) $(LDFLAGS_REL)

$(BIN)/loadgen: Makefile $(shell find workloads/loadgen/src workloads/loadgen/Cargo.* 2>/dev/null)
	@mkdir -p $(BIN)
	cd workloads/loadgen && RUSTFLAGS="$(RUSTFLAGS_REL)" $(CARGO) build -q --release --locked \
	    --target-dir $(ROOT)/build/target/loadgen
	cp build/target/loadgen/release/loadgen $@

# Print the build settings (recorded in run manifests).
build-flags:
	@echo "GOFLAGS=$(GOFLAGS_REL)"; echo "RUSTFLAGS=$(RUSTFLAGS_REL)"; echo "CXXFLAGS=$(CXXFLAGS_REL)"; echo "LDFLAGS=$(LDFLAGS_REL)"

lint: venv
	$(VENV)/bin/ruff check labctl tests
	$(VENV)/bin/ruff format --check labctl tests
	$(VENV)/bin/mypy labctl
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/ansible-lint -q playbooks roles
	cd workloads/riskd/go && $(GO) vet ./...
	cd workloads/riskd/rust && $(CARGO) clippy -q --release --locked --target-dir $(ROOT)/build/target/riskd-rust -- -D warnings
	cd workloads/loadgen && $(CARGO) clippy -q --release --locked --target-dir $(ROOT)/build/target/loadgen -- -D warnings

test: deps venv workloads lint
	bash scripts/test.sh

demo: deps venv workloads
	bash scripts/demo.sh

bench-workloads: venv workloads
	$(PY) workloads/bench.py

bench-ship: venv deps
	$(PY) scripts/bench_ship.py

bench-provision: venv deps
	$(PY) scripts/bench_provision.py

clean:
	rm -rf build .venv
