# lorabench — build, run, test.  `make run` and `make test` install missing Debian
# packages first (make deps), so they are the whole set-up on a fresh machine.

PKGS      := openblas libcjson ncursesw sqlite3 ompi-c
DEB_PKGS  := build-essential pkg-config libopenblas-dev libcjson-dev libncurses-dev \
             libsqlite3-dev tmux clang cppcheck sqlite3 valgrind util-linux libdnnl-dev \
             slurm-wlm munge \
             libopenmpi-dev openmpi-bin
BUILD     ?= build
CC        ?= cc
SAN       ?=

# OpenMPI (ompi-c: libopenmpi-dev) is linked in for `mpirun -n N lorabench train`
# (experiments/run/lb_mpi.c); a run without mpirun never initialises it.
# oneDNN (libdnnl-dev: bf16 products on AMX / AVX-512 bf16) ships no .pc file; its
# Debian build runs on OpenMP (libgomp), whose team size engine/kernels/gemm_bf16.c sets.
HAVE_PKGS := $(shell pkg-config --exists $(PKGS) 2>/dev/null && test -f /usr/include/dnnl.h && echo yes)
ifeq ($(HAVE_PKGS),yes)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -ldnnl -lgomp
endif

CFLAGS  ?= -O2 -g
# One folder per concern (ARCHITECTURE.md); every folder that holds headers is on the include path.
SRC_DIRS := $(sort $(dir $(wildcard engine/*/*.h experiments/*/*.h store/*.h tui/*/*.h tui/*.h)))
INCLUDES := $(patsubst %/,-I%,$(SRC_DIRS))
override CFLAGS  += -std=c11 -Wall -Wextra -Wmissing-prototypes -Werror -D_GNU_SOURCE -pthread $(INCLUDES) $(PKG_CFLAGS) $(SAN)
override LDLIBS  += $(PKG_LIBS) -lm -pthread
override LDFLAGS += $(SAN)

ENGINE_SRC := $(sort $(wildcard engine/*/*.c))
STORE_SRC  := $(sort $(wildcard store/*.c))
EXP_SRC    := $(sort $(wildcard experiments/*/*.c))
TUI_SRC    := $(sort $(wildcard tui/*/*.c))
TEST_SRC   := $(sort $(wildcard tests/test_*.c))
obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

LIBS  := $(BUILD)/libtui.a $(BUILD)/libexperiments.a $(BUILD)/libstore.a $(BUILD)/libengine.a
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all deps run test tests asan bench bench-kernels fuzz fuzz-build lint clean
.SECONDARY:

ifneq ($(HAVE_PKGS),yes)
# Libraries are missing: install them, then make the same goal again (pkg-config is asked
# afresh by the new make).
all run test asan bench fuzz:
	@echo "lorabench: some libraries ($(PKGS)) are missing; running make deps first"
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory $@
else
all: $(BUILD)/lorabench
endif

deps:
	@if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "Not a Debian/Ubuntu system: install these (or your system's equivalents):"; \
	  echo "  $(DEB_PKGS)"; exit 1; fi
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -ne 0 ] && sudo=sudo; \
	  echo "Installing:$$missing"; \
	  $$sudo apt-get install -y $$missing || { $$sudo apt-get update && $$sudo apt-get install -y $$missing; }; \
	else echo "All Debian packages present."; fi

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libengine.a: $(call obj,$(ENGINE_SRC))
$(BUILD)/libstore.a: $(call obj,$(STORE_SRC)) $(BUILD)/gen/schema_sql.o

# store/schema.sql is the truth: it is compiled in as the C string lb_schema_sql.
$(BUILD)/gen/schema_sql.c: store/schema.sql
	@mkdir -p $(dir $@)
	@{ echo 'const char lb_schema_sql[] ='; sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@
$(BUILD)/gen/schema_sql.o: $(BUILD)/gen/schema_sql.c
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/libexperiments.a: $(call obj,$(EXP_SRC))
$(BUILD)/libtui.a: $(call obj,$(TUI_SRC))
$(BUILD)/lib%.a:
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lorabench: $(BUILD)/tui/main.o $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

ifeq ($(HAVE_PKGS),yes)
tests: all $(TESTS)

test: all $(TESTS)
	@bash tests/run.sh $(BUILD)/tests

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

run: all
	$(BUILD)/lorabench

bench: all
	$(BUILD)/lorabench bench --table

# fp32 (OpenBLAS and oneDNN, gemm_f32.h) against bf16 (gemm_bf16.h) matrix products, GFLOP/s
# on 2 threads: first with OpenBLAS's own pick of kernels for this CPU, then with its Haswell
# (AVX2) ones, which Debian 12's OpenBLAS picks on a model it does not know (BENCHMARKS.md).
bench-kernels: $(BUILD)/bench_gemm
	env -u OPENBLAS_CORETYPE $(BUILD)/bench_gemm 2
	OPENBLAS_CORETYPE=HASWELL $(BUILD)/bench_gemm 2
$(BUILD)/bench_gemm: $(BUILD)/tests/bench_gemm.o $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
endif

# cppcheck at its default level over every source, in the configuration the build uses.
# A false positive gets an inline `// cppcheck-suppress <id> ; <why>` where it is.
LINT_FLAGS := --quiet --error-exitcode=1 --inline-suppr --std=c11 -D_GNU_SOURCE $(INCLUDES)
lint:
	cppcheck $(LINT_FLAGS) engine store experiments tui tests

# libFuzzer targets (tests/fuzz/fuzz_*.c), built with clang, ASan and UBSan, each run for
# FUZZ_SECONDS; a corpus per target lives in build-fuzz/corpus/<target>.
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_LIB_SRC := $(ENGINE_SRC) $(wildcard experiments/run/spec.c)
FUZZ_FLAGS := -std=c11 -O1 -g -D_GNU_SOURCE $(INCLUDES) $(PKG_CFLAGS) \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
build-fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRC)
	@mkdir -p build-fuzz
	clang $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB_SRC) $(PKG_LIBS) -lm -pthread

fuzz-build: $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRC))

ifeq ($(HAVE_PKGS),yes)
fuzz: fuzz-build
	@for t in $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC)); do \
	  mkdir -p build-fuzz/corpus/$$t; rm -f build-fuzz/$$t-crash-* build-fuzz/$$t-leak-* build-fuzz/$$t-timeout-*; \
	  seeds=tests/fuzz/seeds/$${t#fuzz_}; [ -d $$seeds ] || seeds=; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  build-fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/$$t- build-fuzz/corpus/$$t $$seeds 2>&1 | \
	    grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Test unit written' || true; \
	  if [ -n "$$(ls build-fuzz/$$t-crash-* build-fuzz/$$t-leak-* build-fuzz/$$t-timeout-* 2>/dev/null)" ]; then \
	    echo "fuzz: $$t found a failing input (build-fuzz/$$t-*)"; exit 1; fi; \
	done; echo "fuzz: no crashes"
endif

clean:
	rm -rf build build-asan build-clang build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
