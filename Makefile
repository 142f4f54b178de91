# nnlab: one Makefile. Builds build/nnlab and the tests; installs what is missing first.
# Targets: all run test bench fuzz data deps clean.  Switches: CUDA=auto|0|1 SAN=1 DEBUG=1

CUDA  ?= auto
SAN   ?= 0
DEBUG ?= 0

# Debian packages the project needs to build, test and run.
DEB_PKGS := build-essential pkg-config libreadline-dev liblua5.4-dev libopenblas-openmp-dev \
            zlib1g-dev libsdl2-dev libsdl2-image-dev libsdl2-ttf-dev fonts-dejavu-core libstb-dev \
            libcjson-dev liblapacke-dev libx11-dev xvfb x11-utils tmux python3 python3-numpy \
            dataset-fashion-mnist libopenmpi-dev openmpi-bin clang-14 libclang-rt-14-dev \
            libomp-14-dev procps libssl-dev libonnx-dev protobuf-c-compiler libprotobuf-c-dev nodejs
# npm, for ONNX Runtime's Node package (tests/onnx): Debian's package, unless a node from elsewhere
# (NodeSource's nodejs, which provides npm and conflicts with Debian's) already brings it.
NPM_PKG := $(if $(shell command -v npm 2>/dev/null),,npm)
# Extra packages for `make bench` (the PyTorch peer).
BENCH_PKGS := python3-torch python3-numpy

# Each configuration builds into its own folder so SAN=1 never mixes with a plain build.
VARIANT := $(if $(filter 1,$(SAN)),san,$(if $(filter 1,$(DEBUG)),debug,release))
BUILD   := build/$(VARIANT)
BIN     := build/nnlab
ifneq ($(VARIANT),release)
BIN     := $(BUILD)/nnlab
endif

# The public targets (all run test bench fuzz data) run in two stages: this make runs the deps step,
# then builds in a second make (NL_STAGE=build) that is parsed after the packages are installed,
# so the flags that pkg-config gives are never computed before the packages exist (on a fresh
# machine they would be empty for the whole run). Plain file targets (build/nnlab,
# build/release/tests/test_x) are built in one stage, with the packages already installed.
PUBLIC_GOALS := all run test bench fuzz data
NL_STAGE ?= deps
PKGS     := lua5.4 zlib libcjson sdl2 SDL2_ttf SDL2_image lapacke libcrypto libprotobuf-c
# Stage one of the public targets compiles nothing, so it needs none of these flags.
ifneq ($(NL_STAGE)$(filter-out $(PUBLIC_GOALS) deps deps-bench clean help,$(MAKECMDGOALS)),deps)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) openblas 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) openblas 2>/dev/null)
RL_LIBS    := $(shell pkg-config --libs readline 2>/dev/null || echo -lreadline)
endif

CC      := gcc
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes
OPT     := -O3 -march=native -fno-math-errno
ifeq ($(DEBUG),1)
OPT     := -O0 -g3 -DNL_CHECKED
endif
ifeq ($(SAN),1)
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -march=native -DNL_CHECKED
LDSAN   := -fsanitize=address,undefined
endif
# core/ is in folders by concern; each is on the include path, so headers are named alone.
CORE_INC := $(patsubst %,-I%,$(wildcard core/*/))
# The ONNX protobuf code is generated from Debian's onnx.proto at build time into build/gen (the
# same for every variant; compiled per variant like any source).
GEN     := build/gen
ONNX_PROTO := /usr/include/onnx/onnx.proto
CFLAGS  := $(CSTD) $(WARN) $(OPT) -fopenmp -MMD -MP $(CORE_INC) -Ibackends -Idsl -Iviz -Idist -I$(GEN) $(PKG_CFLAGS)
LDFLAGS := -fopenmp $(LDSAN)
LDLIBS  := $(PKG_LIBS) -lm -lpthread -ldl

# ---- CUDA switch: auto builds backends/cuda when nvcc and its static runtime are found and the
# backend has sources. nvcc may be a wrapper script on PATH (/usr/local/bin/nvcc), so the toolkit's
# folder is what nvcc itself reports (TOP in its --dryrun trace), and the runtime library is looked
# for where toolkits put it (lib64, or targets/<arch>/lib).
NVCC := $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
CUDA_SRC := $(wildcard backends/cuda/*.cu)
ifneq ($(and $(NVCC),$(CUDA_SRC),$(filter-out 0,$(CUDA))),)
CUDA_HOME := $(abspath $(shell $(NVCC) --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^\#\$$ TOP=//p' | head -n1))
CUDA_LIBDIR := $(patsubst %/libcudart_static.a,%,$(firstword $(wildcard \
               $(CUDA_HOME)/lib64/libcudart_static.a $(CUDA_HOME)/targets/*/lib/libcudart_static.a \
               /usr/local/cuda/lib64/libcudart_static.a)))
endif
ifeq ($(CUDA),auto)
USE_CUDA := $(if $(and $(NVCC),$(CUDA_SRC),$(CUDA_LIBDIR)),1,0)
else
USE_CUDA := $(CUDA)
endif
ifeq ($(USE_CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but nvcc was not found (looked on PATH and in /usr/local/cuda/bin))
endif
ifeq ($(CUDA_SRC),)
$(error CUDA=1 but backends/cuda has no sources yet: build with CUDA=auto or CUDA=0)
endif
ifeq ($(CUDA_LIBDIR),)
$(error CUDA=1 but libcudart_static.a was not found (nvcc $(NVCC) reports its toolkit at '$(CUDA_HOME)'))
endif
CFLAGS  += -DNL_HAVE_CUDA
# The runtime is linked statically, so that a machine without CUDA still starts nnlab; cuBLAS is
# loaded with dlopen when a device is first used (from CUDA, or PyTorch's nvidia-* wheels on a GPU
# host), so start-up does not map its hundreds of megabytes. No cuDNN: convolution, pooling and
# batch norm are own kernels (see the README).
LDLIBS  += -L$(CUDA_LIBDIR) -lcudart_static -ldl -lrt -lstdc++
# Hopper (sm_90) machine code plus PTX for newer cards. Warnings are errors, nvcc's and the host
# compiler's; -fmad=false keeps a*b+c two roundings, as the CPU computes it (gcc -std=c11 does not
# contract), so the shared per-element math gives the same results on both.
NVFLAGS := -O3 -std=c++17 $(CORE_INC) -Ibackends -gencode arch=compute_90,code=sm_90 \
           -gencode arch=compute_90,code=compute_90 -fmad=false -Werror all-warnings \
           -Xcompiler -Wall,-Wextra,-Werror,-fPIC -MMD -MP
ifeq ($(SAN),1)
NVFLAGS += -g -Xcompiler -fno-omit-frame-pointer
endif
endif

# ---- MPI (Open MPI from Debian): compiled into a plugin beside the program, see dist/.
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null || pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null || pkg-config --libs ompi-c 2>/dev/null)
MPI_PLUGIN := $(dir $(BIN))nnlab_mpi.so

# ---- sources: every .c in these folders belongs to the library; repl/main.c is the program.
LIB_SRC  := $(wildcard core/*/*.c backends/*.c backends/cpu/*.c backends/sim/*.c backends/cuda/*.c dsl/*.c viz/*.c) \
            $(filter-out repl/main.c,$(wildcard repl/*.c)) $(filter-out dist/mpi.c,$(wildcard dist/*.c))
LUA_SRC  := $(wildcard dsl/*.lua)
LESSON_SRC := $(sort $(wildcard lessons/*.lua))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(LUA_SRC:%.lua=$(BUILD)/%.lua.o) $(BUILD)/lessons/all.lua.o \
            $(BUILD)/$(GEN)/onnx.pb-c.o
ifeq ($(USE_CUDA),1)
LIB_OBJ  += $(CUDA_SRC:%.cu=$(BUILD)/%.cu.o)
endif
LIB      := $(BUILD)/libnnlab.a
TEST_SRC := $(wildcard tests/c/test_*.c)
TEST_BIN := $(TEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

# Every object and program depends on the flags it was built with (FLAGS_STAMP, rewritten only when
# they change), so changing a switch (CUDA=0 after a CUDA build, a newly installed package) rebuilds
# what the change concerns instead of linking objects compiled for another configuration.
FLAGS_STAMP := $(BUILD)/flags.txt
ifneq ($(NL_STAGE)$(filter-out $(PUBLIC_GOALS) deps deps-bench clean help,$(MAKECMDGOALS)),deps)
FLAGS_NOW := $(CC) $(CFLAGS) | $(NVCC) $(NVFLAGS) | $(LDFLAGS) $(LDLIBS) $(RL_LIBS)
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = '$(FLAGS_NOW)' ] || \
          printf '%s' '$(FLAGS_NOW)' > $(FLAGS_STAMP); })
endif

# The generated C of the embedded Lua files is kept (make would otherwise delete it after the
# build and print the rm as the last line of a test run).
.SECONDARY:
.PHONY: all run test bench fuzz data deps deps-bench clean help FORCE
.DEFAULT_GOAL := all

help:
	@echo "make            build $(BIN)"
	@echo "make run        install what is missing, build, run the main experiment"
	@echo "make test       install what is missing, build, run every test"
	@echo "make bench      benchmarks side by side with the PyTorch peer"
	@echo "make fuzz       each libFuzzer target of tests/fuzz (FUZZ_ONLY=names) for FUZZ_TIME seconds (default 60)"
	@echo "make data       CIFAR-10 into data/ (CIFAR10_ARCHIVE=tarball, else download)"
	@echo "switches: CUDA=auto|0|1  SAN=1 (ASan+UBSan)  DEBUG=1"

# ---- dependencies: checks with dpkg-query (fast); installs only what is missing.
deps:
	@sh tests/deps.sh $(DEB_PKGS) $(NPM_PKG)

deps-bench:
	@sh tests/deps.sh $(BENCH_PKGS)

# ---- build
$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/repl/%.o: CFLAGS += $(shell pkg-config --cflags readline 2>/dev/null)

# The git commit the build comes from, for sys.info() and the manifests of runs and journals:
# nl_commit.h is rewritten only when the commit (or whether the checkout has changes) differs,
# so only dsl/sys.c is rebuilt then. Outside a git checkout it reads "unknown".
NL_COMMIT := $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
$(BUILD)/nl_commit.h: FORCE
	@mkdir -p $(dir $@); echo '#define NL_COMMIT "$(NL_COMMIT)"' > $@.new; \
	  if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi
$(BUILD)/dsl/sys.o: $(BUILD)/nl_commit.h
$(BUILD)/dsl/sys.o: CFLAGS += -I$(BUILD)
FORCE:

# Lua sources of the DSL are embedded in the binary as C arrays named nl_lua_<file>.
$(BUILD)/%.lua.c: %.lua
	@mkdir -p $(dir $@)
	@name=nl_lua_$$(basename $< .lua); \
	{ echo "/* generated from $< */"; echo "#include <stddef.h>"; \
	  echo "const char $${name}[] = {"; od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo "0x00};"; echo "const size_t $${name}_len = sizeof($${name}) - 1;"; } > $@

# The lessons (lessons/*.lua, in file-name order) in one table, nl_lessons (read by dsl/lesson.c):
# {file name without .lua, text, length}, ending with a row of NULLs.
$(BUILD)/lessons/all.lua.c: $(LESSON_SRC)
	@mkdir -p $(dir $@)
	@{ echo "/* generated from the lessons/ folder (one .lua file each) */"; echo "#include <stddef.h>"; \
	  echo "struct nl_lesson_file { const char *name; const char *text; size_t len; };"; i=0; \
	  for f in $^; do i=$$((i + 1)); echo "static const char lesson$$i[] = {"; \
	    od -An -v -tx1 $$f | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo "0x00};"; done; \
	  echo "const struct nl_lesson_file nl_lessons[] = {"; i=0; \
	  for f in $^; do i=$$((i + 1)); echo "{\"$$(basename $$f .lua)\", lesson$$i, sizeof lesson$$i - 1},"; done; \
	  echo "{NULL, NULL, 0}};"; } > $@

$(BUILD)/%.lua.o: $(BUILD)/%.lua.c
	$(CC) $(CSTD) -c $< -o $@

# protoc-c's C for onnx.proto (the message types of core/io/onnx*.c), and the ONNX code waits for it.
$(GEN)/onnx.pb-c.c $(GEN)/onnx.pb-c.h: $(ONNX_PROTO)
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)

ONNX_OBJ := $(patsubst %.c,%.o,$(wildcard core/io/onnx*.c))
$(ONNX_OBJ:%=$(BUILD)/%): $(GEN)/onnx.pb-c.h

$(BUILD)/%.cu.o: %.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

# The MPI plugin: the only object linked with libmpi, loaded by dist/dist.c with dlopen when a job
# has several ranks (linking libmpi into nnlab itself would add its start-up to every plain start).
$(MPI_PLUGIN): dist/mpi.c dist/plugin.h
	$(CC) $(CSTD) $(WARN) $(OPT) -fPIC -shared $(MPI_CFLAGS) $< -o $@ $(LDSAN) $(MPI_LIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/repl/main.o $(LIB) $(FLAGS_STAMP)
	$(CC) $(LDFLAGS) $(filter-out $(FLAGS_STAMP),$^) -o $@ $(LDLIBS) $(RL_LIBS)

$(BUILD)/tests/%: tests/c/%.c $(LIB) tests/c/testhelp.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS) $(RL_LIBS)

$(BUILD)/bench/%: bench/%.c $(LIB) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS) $(RL_LIBS)

# ---- fuzzing: the library again, built by clang with ASan + UBSan and libFuzzer's coverage
# counters (without OpenMP: one thread per fuzzer), whatever SAN says; one binary per target.
FUZZ_CC    := clang-14
FUZZ_BUILD := build/fuzz
FUZZ_OPT   := -O1 -g -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := $(CSTD) -Wall -Wextra -Wno-unknown-pragmas $(FUZZ_OPT) -MMD -MP $(filter -I%,$(CFLAGS))
FUZZ_OBJ   := $(filter-out $(BUILD)/%.cu.o,$(LIB_OBJ))
FUZZ_OBJ   := $(FUZZ_OBJ:$(BUILD)/%=$(FUZZ_BUILD)/%)
FUZZ_LIB   := $(FUZZ_BUILD)/libnnlab.a
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_TIME  ?= 60

$(ONNX_OBJ:%=$(FUZZ_BUILD)/%): $(GEN)/onnx.pb-c.h

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/%.lua.o: $(BUILD)/%.lua.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) -c $< -o $@

$(FUZZ_LIB): $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB) -o $@ $(LDLIBS) -lgomp $(RL_LIBS)

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# ---- stage one of a public target: the deps step, then the same goal in a fresh make (see above).
# Command-line variables (SAN=1, EPOCHS=1, CIFAR10_ARCHIVE=...) reach it through MAKEFLAGS.
# Serial here, so that `make -j2 test bench` does not run two builds of the same files at once;
# the second make builds in parallel.
ifeq ($(NL_STAGE),deps)
.NOTPARALLEL:
$(PUBLIC_GOALS): deps
	@$(MAKE) --no-print-directory NL_STAGE=build $@
bench: deps-bench
else
# ---- stage two: build, run, test, bench (the packages are installed by now)
all: $(BIN) $(MPI_PLUGIN)

EPOCHS ?=
run: $(BIN)
	@$(MAKE) --no-print-directory data || \
	  echo "make run: CIFAR-10 could not be prepared; the lesson runs on Fashion-MNIST instead"
	./$(BIN) examples/cifar10_cnn.lua $(EPOCHS)

# ONNX Runtime, the peer of the ONNX tests: its Node package (with its CPU library) installed once
# into build/node_modules, its install script skipped (it would fetch GPU binaries from elsewhere);
# the stamp is made only once a session of it has run here.
ORT_VERSION := 1.30.0
ORT_STAMP   := build/node_modules/.nnlab-onnxruntime-node-$(ORT_VERSION)
$(ORT_STAMP): tests/onnx/run_ort.js
	npm install --ignore-scripts --no-audit --no-fund --prefix build onnxruntime-node@$(ORT_VERSION)
	node tests/onnx/run_ort.js --version
	@touch $@

# With an archive at hand, CIFAR-10 is prepared first so the learning test runs on it.
test: $(BIN) $(MPI_PLUGIN) $(TEST_BIN) $(FUZZ_BIN) $(ORT_STAMP)
	@[ -z "$(CIFAR10_ARCHIVE)" ] || $(MAKE) --no-print-directory data || \
	  echo "make test: CIFAR-10 could not be prepared; its learning test is skipped"
	@NNLAB=./$(BIN) BUILD=$(BUILD) FUZZ_BUILD=$(FUZZ_BUILD) sh tests/run.sh

# Each fuzz target for FUZZ_TIME seconds from its corpus; new inputs go to build/fuzz/corpus/,
# crashes to build/fuzz/findings/ (copy a reproducer to tests/fuzz/regressions/<target>/).
fuzz: $(FUZZ_BIN)
	@FUZZ_BUILD=$(FUZZ_BUILD) sh tests/fuzz/run.sh long $(FUZZ_TIME)

bench: $(BIN) $(MPI_PLUGIN) $(BENCH_BIN)
	@NNLAB=./$(BIN) BUILD=$(BUILD) sh bench/run.sh

# CIFAR-10 into data/cifar-10-batches-bin, from CIFAR10_ARCHIVE (official tarball or image folders).
# Default: the image-folder archive kept beside this checkout, when there is one.
CIFAR10_ARCHIVE ?= $(wildcard ../shared/data/cifar10-jpeg.tar.gz)
data: $(BIN)
	@NNLAB=./$(BIN) sh tests/get_data.sh "$(CIFAR10_ARCHIVE)"
endif

clean:
	rm -rf build
