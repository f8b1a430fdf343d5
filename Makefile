# Thin wrapper over CMake. `make run` and `make test` are the two commands a newcomer needs.
# `make install` (PREFIX, DESTDIR) installs the proxy, its man page and systemd unit.
MAKEFLAGS += --no-print-directory
BUILD    ?= build
SANITIZE ?= 0
CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=$(if $(filter 1,$(SANITIZE)),Debug,Release) \
              -DLOCKPROXY_SANITIZE=$(if $(filter 1,$(SANITIZE)),ON,OFF)

.PHONY: all deps build run install test test-asan bench fuzz conformance clean

all: build

deps:
	@sh scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j 2

# Builds the proxy only (its output in $(BUILD)/run-build.log, shown when it fails) and runs
# it (scripts/run.sh) in the terminal's foreground, so that Ctrl-C stops it and make exits 0.
run: deps
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@echo "building lockproxy ($(BUILD)/run-build.log)"
	@cmake --build $(BUILD) -j 2 --target lockproxy >$(BUILD)/run-build.log 2>&1 || \
	  { cat $(BUILD)/run-build.log; exit 1; }
	@perl scripts/fg.pl sh scripts/run.sh $(BUILD)/lockproxy

# Installs under PREFIX (default /usr/local), below DESTDIR when given: the binary (sbin), the
# man page, the systemd unit, the logrotate snippet, /etc/lockproxy (kept when present) and
# the examples. Builds only the proxy; an existing build directory keeps its build type.
PREFIX ?= /usr/local
install:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j 2 --target lockproxy
	@cmake --install $(BUILD) --prefix $(PREFIX)

test: build
	@prove --exec '' -r $(BUILD)/tests

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan SANITIZE=1

# libFuzzer (clang, ASan, UBSan) on the request framer, the reply scanner, the policy and
# config parsers and the lock-script reply mapping: each target runs FUZZ_SECONDS, starting
# from tests/fuzz/corpus/<target> and keeping what it finds in $(FUZZ_BUILD)/corpus/<target>.
# A failed check or a sanitizer report stops the run and leaves the input in
# $(FUZZ_BUILD)/artifacts/. Then the stateful lock-path fuzzer (tests/lock/fuzz_stateful.t,
# real Redis servers and proxies) runs FUZZ_STATEFUL_ROUNDS rounds (make test runs 60).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= request reply policy config lockreply
FUZZ_STATEFUL_ROUNDS ?= 1000
fuzz: build
	@sh scripts/deps.sh clang libclang-rt-14-dev
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DLOCKPROXY_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j 2 $(foreach t,$(FUZZ_TARGETS),--target fuzz_$(t))
	@mkdir -p $(FUZZ_BUILD)/artifacts
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(FUZZ_BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -max_len=8192 -print_final_stats=1 -dict=tests/fuzz/$$t.dict \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
	    $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t 2>$(FUZZ_BUILD)/fuzz_$$t.log; \
	  rc=$$?; grep -E '^(stat::number_of_executed_units|Done|==[0-9]+==|SUMMARY|lockproxy fuzz)' $(FUZZ_BUILD)/fuzz_$$t.log; \
	  if [ $$rc -ne 0 ]; then tail -n 40 $(FUZZ_BUILD)/fuzz_$$t.log; exit 1; fi; \
	done
	@echo "fuzz_stateful: $(FUZZ_STATEFUL_ROUNDS) rounds"
	@LP_FUZZ_ROUNDS=$(FUZZ_STATEFUL_ROUNDS) LP_TEST_WATCHDOG=1200 $(BUILD)/tests/lock/fuzz_stateful.t \
	  >$(FUZZ_BUILD)/fuzz_stateful.log 2>&1; rc=$$?; \
	  grep -E '^(not ok|# LP_SEED|# seed|# rounds|# MISMATCH)' $(FUZZ_BUILD)/fuzz_stateful.log; \
	  if [ $$rc -ne 0 ]; then tail -n 40 $(FUZZ_BUILD)/fuzz_stateful.log; exit 1; fi

# Redis 7.0.15's own test suite (../shared/redis-tests-7.0.15, or $LP_REDIS_TESTS), every
# unit directly and through lockproxy with an enforce lock rule; fails when a test that passes
# directly fails through the proxy. Logs in $(BUILD)/conformance/. See scripts/conformance.sh.
conformance: build
	@bash scripts/conformance.sh $(BUILD)

bench: build
	@bash tests/bench/run.sh $(BUILD)

clean:
	rm -rf build build-asan build-fuzz
