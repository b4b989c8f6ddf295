# make demo:      set up .venv, then the whole distillation pipeline on Multi30k
#                 (teacher, distillation, latent model, BLEU, latency and throughput table; ~37 minutes on 2 cores)
# make benchmark-cpu: the same with CPU benchmark budgets (teacher 70 min, latent 60 min; ~150 min on 2 cores)
# make benchmark: the same with the full budgets (scripts/pipeline.sh --full; meant for a GPU)
# make ablation: the latent model's recipe one change at a time (benchmarks/latent_ablation.py; needs make demo's work dir)
# make decoding-speed: BLEU, batch-1 latency and batch-128 throughput of teacher and latent model with
#                 noisy parallel decoding, a lexical shortlist, bfloat16 and ONNX Runtime (benchmarks/decoding_speed.py; needs make demo's work dir)
# make frontier:  the exported latent translator against the teacher in fairseq and CTranslate2 (float32,
#                 int8, vocabulary map) and a shallow-decoder student: BLEU, chrF++, batch-1 latency and
#                 large-batch throughput, decoding alone and from raw text (benchmarks/frontier.py; needs make demo's work dir)
# make test:      set up .venv and run the test suite (CI runs this)
# make test-fast: the same without the end-to-end pipeline runs (marked slow)
# make bottlenecks: every bottleneck for the same budget on Multi30k (benchmarks/bottlenecks.py)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORPUS ?= ../shared/corpora/multi30k
WORK ?= work/demo
# The shared corpus when it is there, else the official download.
CORPUS_ARG = $(if $(wildcard $(CORPUS)/train.en),--corpus-dir $(CORPUS),)

.PHONY: setup test test-fast demo benchmark benchmark-cpu ablation decoding-speed frontier bottlenecks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first (the CPU wheel; an unpinned torch is a CUDA build of several GB), then what
# fairseq-fixed's build needs, so that fairseq-fixed compiles against this torch without
# build isolation: an isolated build would install a second, newest torch (5 GB) to compile against.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.13.0 numpy cython
	$(BIN)/pip install -q --no-build-isolation fairseq-fixed==0.12.3.1
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Two pytest workers, one test file each at a time: most tests run fairseq's CLIs on
# one thread (tests/conftest.py run), so the two cores work side by side.
PYTEST := $(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadfile
test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(PYTEST) tests

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(PYTEST) -m "not slow" tests

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/pipeline.sh multi30k $(CORPUS_ARG) --work $(WORK)

benchmark-cpu: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/pipeline.sh multi30k $(CORPUS_ARG) --teacher-minutes 70 --latent-minutes 60 \
	  --work work/benchmark-cpu

ablation: setup
	$(BIN)/pip install -q -e '.[test,benchmark]'
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/latent_ablation.py --base $(WORK) --work work/ablation

decoding-speed: setup
	$(BIN)/pip install -q -e '.[test,benchmark]'
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/decoding_speed.py --work $(WORK) --shortlist --bf16 --onnx

frontier: setup
	$(BIN)/pip install -q -e '.[test,benchmark]'
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/frontier.py --work $(WORK)

benchmark: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/pipeline.sh multi30k --full $(CORPUS_ARG) --work work/benchmark

bottlenecks: setup
	$(BIN)/pip install -q -e '.[test,benchmark]'
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/bottlenecks.py --corpus $(CORPUS) --work work/bottlenecks

clean:
	rm -rf $(VENV) work .pytest_cache
