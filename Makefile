# Thin wrapper over CMake. `make run` and `make test` are the two commands a newcomer needs.
BUILD    ?= build
SANITIZE ?= 0
CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=$(if $(filter 1,$(SANITIZE)),Debug,Release) \
              -DLOCKPROXY_SANITIZE=$(if $(filter 1,$(SANITIZE)),ON,OFF)

.PHONY: all deps build run test test-asan bench clean

all: build

deps:
	@sh scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j 2

run: build
	@sh scripts/run.sh $(BUILD)/lockproxy

test: build
	@prove --exec '' -r $(BUILD)/tests

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan SANITIZE=1

bench: build
	@echo "make bench: not yet (issue 4)"

clean:
	rm -rf build build-asan
