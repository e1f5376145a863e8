# driftd - the two set-up commands and their parts.
#   make run    install dependencies, build, start a local 3-node cluster
#               on 127.0.0.1:8080-8082 (Ctrl-C stops all three)
#   make test   install dependencies, build, run every test and a short
#               run of every fuzz target
# Extra: make build, make test-asan (ASan+UBSan build and the whole suite),
#        make unit, make fuzz (libFuzzer targets, a short fixed count each;
#        FUZZ_TIME=SECONDS for a long run, docs/fuzzing.md), make clean.
#        WERROR=1 makes warnings errors.

BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_RUNS ?= 100000
FUZZ_TIME ?= 0
FUZZ_CC ?= clang-14
JOBS ?= 2
WERROR ?= 0
CMAKE_FLAGS ?=
ifeq ($(WERROR),1)
CMAKE_FLAGS += -DWERROR=ON
endif

.PHONY: all deps build run test test-asan unit npm clean bench fuzz \
	fuzz-build fuzz-seeds

all: build

deps:
	./scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

npm:
	cd tests/blackbox && npm ci --no-audit --no-fund --loglevel=error

# In a terminal the script runs as its own foreground job (bash -m): Ctrl-C
# then reaches the script and its nodes but not make, which would otherwise
# die of the SIGINT whatever the script's status. make exits with the
# script's status: 0 when the three nodes stopped cleanly.
run: build
	@if [ -t 0 ]; then \
		bash -m -c './deploy/run-cluster.sh $(BUILD)/driftd; exit $$?'; \
	else \
		./deploy/run-cluster.sh $(BUILD)/driftd; \
	fi

test: build npm
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	$(MAKE) fuzz

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

test-asan: deps npm
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DENABLE_ASAN=ON \
		-DENABLE_UBSAN=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j$(JOBS)

# libFuzzer targets (tests/fuzz, clang with ASan + UBSan) in their own build
# folder, each run over its corpus for FUZZ_RUNS inputs (or FUZZ_TIME s).
fuzz-build: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=$(FUZZ_CC) \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DENABLE_FUZZ=ON $(CMAKE_FLAGS)
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzz

fuzz: fuzz-build
	FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_TIME=$(FUZZ_TIME) \
		./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_FLAGS)

# Rewrites the seed-* files of tests/fuzz/corpus (crash-* files stay).
fuzz-seeds: fuzz-build
	$(FUZZ_BUILD)/fuzz_seeds tests/fuzz/corpus

# A local 3-node cluster, the standard benchmark set, the results table
# (docs/benchmarks.md), with NATS JetStream under the ingest load next to
# driftd. RUNS=, QUICK=1, SCENARIOS= pass through.
bench: build
	./scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
