"""The ``llamacpp`` backend on real models: SmolLM2-135M-Instruct and Gemma 3 270M.

llama-cpp-python is an optional extra (``pip install 'mllmrec-pyg[llamacpp]'``)
that compiles llama.cpp from source, so this file is skipped where it is not
installed. Generations are a few tokens long; the whole file takes seconds.

The references are independent of the backend's own decoding loop: llama-cpp-
python's high-level ``Llama.generate`` for greedy text, the chat template
rendered by transformers for the prompt tokens, and NumPy written out here for
the repetition penalty and the n-gram ban.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math

import numpy as np
import pytest

from mllmrec_pyg.reasoning import models
from mllmrec_pyg.reasoning.backends import BackendInputError, get_backend
from mllmrec_pyg.reasoning.backends.base import GenerationRequest
from mllmrec_pyg.reasoning.prompts import (
    COMPLETION_TEMPLATE_VERSION,
    completion_prompt,
    item_text_prompt,
    preference_prompt,
)
from mllmrec_pyg.reasoning.runner import run_requests
from mllmrec_pyg.reasoning.store import GenerationStore

llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed: pip install 'mllmrec-pyg[llamacpp]' "
    "(it compiles llama.cpp, about 20 CPU-minutes)",
)
if importlib.util.find_spec(models.SMOLLM2_MODULE) is None:
    pytest.skip(f"the {models.SMOLLM2_PACKAGE} wheel is not installed", allow_module_level=True)

from mllmrec_pyg.reasoning.backends.llamacpp import LlamaCppBackend  # noqa: E402

MAX_NEW = 6
PROMPTS = [
    "Name a fruit.",
    "Write one sentence about the sea.",
    "The user bought a glass beaker, a pH meter and nitrile gloves. Describe their needs.",
    "List three colours.",
]


def _has_gemma() -> bool:
    return all(importlib.util.find_spec(m) is not None for m, _ in models.GEMMA3_270M_CHUNKS)


@pytest.fixture(scope="module")
def smol() -> LlamaCppBackend:
    b = LlamaCppBackend(
        model="smollm2",
        parallel=3,
        n_ctx=1024,
        threads=1,
        max_new_tokens=MAX_NEW,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        progress=False,
    )
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def gemma():
    if not _has_gemma():
        pytest.skip(f"the {models.GEMMA3_270M_PACKAGE} wheel is not installed")
    b = LlamaCppBackend(
        model="gemma3-270m", parallel=2, n_ctx=1024, threads=1, max_new_tokens=MAX_NEW
    )
    b.load()
    yield b
    b.close()


def _reference_greedy(backend: LlamaCppBackend, prompt: str, n: int) -> str:
    """Plain greedy decoding through llama-cpp-python's own generator (one sequence)."""
    llm = llama_cpp.Llama(model_path=str(backend.path), n_ctx=1024, n_threads=1, verbose=False)
    tokens = backend.prompt_tokens(GenerationRequest("ref", prompt))
    out: list[int] = []
    for token in llm.generate(tokens, temp=0.0, repeat_penalty=1.0, top_k=1):
        if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token):
            break
        out.append(token)
        if len(out) == n:
            break
    text = llm.detokenize(out).decode("utf-8", errors="replace").strip()
    llm.close()
    return text


def test_prompt_tokens_are_the_chat_template_of_the_gguf(smol):
    from transformers import AutoTokenizer

    path = models.smollm2_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for prompt in PROMPTS[:2]:
        expected = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(expected, dict) or hasattr(expected, "input_ids"):
            expected = expected["input_ids"]
        assert smol.prompt_tokens(GenerationRequest("k", prompt)) == list(expected)
    assert smol.prompt_format == "chat"
    assert smol.prompt_text(GenerationRequest("k", "hi")).endswith(
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_greedy_text_equals_llama_cpp_own_generator_in_any_slot(smol):
    requests = [GenerationRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    out = smol.generate(requests)  # 4 requests over 3 slots: one slot is refilled
    ref = [_reference_greedy(smol, p, MAX_NEW) for p in PROMPTS]
    assert out == ref
    assert len(set(out)) == len(PROMPTS) and all(out)
    # the same request alone, and in another order, gives the same text
    assert smol.generate([requests[2]]) == [out[2]]
    assert smol.generate(requests[::-1]) == out[::-1]


def test_penalty_and_ngram_ban_follow_the_transformers_rules(smol):
    """``_choose`` on hand-made logits against the rules written out with NumPy."""
    b = LlamaCppBackend(
        model="smollm2", repetition_penalty=2.0, no_repeat_ngram_size=3, progress=False
    )
    b._n_vocab = 10
    prompt = [1, 2, 3, 1, 2]
    slot = b._start(0, prompt, GenerationRequest("k", "x"))
    logits = np.array([0.5, 4.0, -1.0, 3.9, 0.0, 1.0, 2.5, 0.1, 0.2, 0.3], dtype=np.float32)
    expected = logits.copy()
    for t in {1, 2, 3}:  # every token of prompt + answer: > 0 divided, < 0 multiplied
        expected[t] = expected[t] / 2.0 if expected[t] > 0 else expected[t] * 2.0
    expected[3] = -np.inf  # "1 2 3" occurred, and the sequence ends in "1 2"
    got = logits.copy()
    token = b._choose(slot, got)
    np.testing.assert_allclose(got, expected)
    assert token == int(np.argmax(expected)) == 6
    b._llama = smol._llama  # detokenize and end-of-generation checks need the model
    b._vocab = smol._vocab
    assert not llama_cpp.llama_vocab_is_eog(smol._vocab, 6)
    assert not b._advance(slot, 6)
    assert slot.tokens == [*prompt, 6] and 6 in slot.seen
    assert slot.ngrams[(1, 2)] == {3, 6}  # "1 2 6" is now banned after "1 2" too
    assert slot.ngrams[(2, 3)] == {1} and slot.ngrams[(3, 1)] == {2}


def test_fingerprint_has_the_settings_not_the_install_path(smol, tmp_path):
    fp = LlamaCppBackend(model="smollm2").fingerprint()
    assert fp["backend"] == "llamacpp" and fp["model"] == models.SMOLLM2_FILE
    assert fp["repetition_penalty"] == 1.2 and fp["no_repeat_ngram_size"] == 4
    assert fp["max_new_tokens"] == 128 and "prompt_format" not in fp  # chat: no template key
    assert str(models.smollm2_path().parent) not in json.dumps(fp)
    for change in (
        {"repetition_penalty": 1.1},
        {"no_repeat_ngram_size": 3},
        {"max_new_tokens": 64},
        {"do_sample": True},
        {"system_prompt": "Be brief."},
    ):
        assert LlamaCppBackend(model="smollm2", **change).fingerprint() != fp, change
    for same in ({"parallel": 8}, {"threads": 2}, {"n_ctx": 2048}, {"n_batch": 64}):
        assert LlamaCppBackend(model="smollm2", **same).fingerprint() == fp, same
    assert get_backend("llamacpp", model="smollm2").fingerprint() == fp
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf does not exist \(option model\)"):
        LlamaCppBackend(model=str(tmp_path / "nope.gguf"))
    with pytest.raises(ValueError, match="takes a .gguf file or a preset name"):
        LlamaCppBackend(model="google/gemma-3-27b-it")
    with pytest.raises(ValueError, match="parallel=0: must be >= 1"):
        LlamaCppBackend(model="smollm2", parallel=0)


def test_store_resumes_and_a_changed_setting_makes_new_keys(smol, tmp_path):
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS)]
    db = tmp_path / "gen.sqlite"
    with GenerationStore(db) as store:
        first = run_requests("t", requests[:2], smol, store, show_progress=False)
        before = smol.stats["requests"]
        out = run_requests("t", requests, smol, store, show_progress=False)
        assert smol.stats["requests"] - before == 2  # only the two missing ones
        assert out[:2] == first
        assert out == run_requests("t", requests, smol, store, show_progress=False)
        assert smol.stats["requests"] - before == 2
        shorter = LlamaCppBackend(
            model="smollm2",
            n_ctx=1024,
            threads=1,
            max_new_tokens=2,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            progress=False,
        )
        run_requests("t", requests[:1], shorter, store, show_progress=False)
        assert store.count("t") == 5
        shorter.close()


def test_requests_that_cannot_run_are_named(smol):
    from PIL import Image

    with pytest.raises(BackendInputError, match="'img' has 1 image.*text-only"):
        smol.generate([GenerationRequest("img", "describe", [Image.new("RGB", (4, 4))])])
    long = "beaker " * 2000
    with pytest.raises(BackendInputError, match=r"'long': \d+ prompt tokens .* exceed .*n_ctx"):
        smol.generate([GenerationRequest("ok", "hi"), GenerationRequest("long", long)])


def test_seeded_sampling_is_per_request():
    kwargs = dict(model="smollm2", n_ctx=512, threads=1, max_new_tokens=MAX_NEW, progress=False)
    a = LlamaCppBackend(do_sample=True, temperature=1.5, seed=3, parallel=2, **kwargs)
    b = LlamaCppBackend(do_sample=True, temperature=1.5, seed=3, parallel=1, **kwargs)
    reqs = [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS[:3])]
    together = a.generate(reqs)
    assert b.generate([reqs[1]]) == [together[1]]  # alone, in another context: same draw
    c = LlamaCppBackend(do_sample=True, temperature=1.5, seed=4, parallel=1, **kwargs)
    assert c.generate(reqs) != together
    for x in (a, b, c):
        x.close()


def test_min_new_tokens_writes_a_fixed_length():
    b = LlamaCppBackend(
        model="smollm2", n_ctx=512, threads=1, max_new_tokens=12, min_new_tokens=12, progress=False
    )
    b.generate([GenerationRequest("a", "Say yes."), GenerationRequest("b", PROMPTS[0])])
    assert b.stats["new_tokens"] == 24
    b.close()


def test_perplexity_of_real_text_is_lower_than_of_shuffled_words(smol):
    text = (
        "The digital caliper measures inside and outside diameters with a resolution of "
        "one hundredth of a millimetre and comes in a padded case."
    )
    words = text.split()
    shuffled = " ".join(words[i] for i in np.random.default_rng(0).permutation(len(words)))
    ppl, n = smol.perplexity(text)
    bad, _ = smol.perplexity(shuffled)
    assert n > 20 and 1 < ppl < bad and math.isfinite(bad)


# -- Gemma 3 270M: a base model, no chat template -> few-shot completion prompts ----------------
def test_gemma_has_no_chat_template_so_prompts_are_completions(gemma):
    assert gemma.prompt_format == "completion"
    fp = gemma.fingerprint()
    assert fp["prompt_format"] == COMPLETION_TEMPLATE_VERSION
    assert fp["model"] == models.GEMMA3_270M_FILE and fp["repetition_penalty"] == 1.2
    items = ["Borosilicate glass beaker set, 250 ml", "Digital pH meter with buffers"]
    req = GenerationRequest("u", preference_prompt(items))
    assert gemma.prompt_text(req) == completion_prompt(req.prompt)
    tokens = gemma.prompt_tokens(req)
    assert tokens[0] == gemma._llama.token_bos() and tokens.count(gemma._llama.token_bos()) == 1
    with pytest.raises(BackendInputError, match="no chat template.*completion"):
        LlamaCppBackend(model="gemma3-270m", prompt_format="chat").fingerprint()


def test_gemma_writes_a_preference_and_a_description(gemma):
    reqs = [
        GenerationRequest(
            "u", preference_prompt(["Nitrile gloves, powder-free", "Safety glasses, anti-fog"])
        ),
        GenerationRequest(
            "i", item_text_prompt("Industrial and Scientific", "Digital multimeter, auto range")
        ),
    ]
    out = gemma.generate(reqs)
    assert all(t and "\n\n" not in t for t in out), out
    assert gemma.generate(reqs[:1]) == out[:1]


def test_the_command_runs_the_llamacpp_backend(tmp_path, monkeypatch):
    """describe-items --from-text and infer-preferences through ``--backend llamacpp``."""
    import test_cli_reasoning

    from mllmrec_pyg.cli import main
    from mllmrec_pyg.data.folder import ITEM_TEXTS_FILE, STORE_FILE

    # a smaller category than the reasoning tests' (8 users with all 8 items): every
    # prompt is a real generation, a few seconds each on one core
    N_USERS = N_ITEMS = 8
    monkeypatch.setattr(test_cli_reasoning, "N_USERS", N_USERS)
    monkeypatch.setattr(test_cli_reasoning, "N_ITEMS", N_ITEMS)
    raw, folder = tmp_path / "raw", tmp_path / "baby"
    test_cli_reasoning.write_raw(raw)
    assert (
        main(["prepare-amazon", "--root", str(raw), "--category", "Baby", "--out", str(folder)])
        == 0
    )
    flags = ["--backend", "llamacpp", "--model", "smollm2", "--max-new-tokens", "3"]
    flags += ["--parallel", "4", "--n-ctx", "768", "--threads", "1"]
    assert main(["describe-items", str(folder), "--from-text", *flags]) == 0
    rows = [json.loads(x) for x in (folder / ITEM_TEXTS_FILE).read_text().splitlines()]
    assert len(rows) == N_ITEMS and all(r["image_description"] for r in rows)
    assert all(r["text"] == f"{r['base_text']} {r['image_description']}" for r in rows)
    flags += ["--token-budget", "300"]
    assert main(["infer-preferences", str(folder), *flags]) == 0
    with GenerationStore(folder / STORE_FILE) as store:
        assert store.count("item_description") == N_ITEMS
        assert store.count("user_preference") == N_USERS
        g = next(store.iter("user_preference"))
        assert g.fingerprint["backend"] == "llamacpp" and g.fingerprint["max_new_tokens"] == 3


def test_llama_cpp_server_with_the_openai_backend(smol, tmp_path):
    """The served route: ``python -m llama_cpp.server`` + ``--backend openai``."""
    for module in ("llama_cpp.server.app", "openai"):
        try:
            importlib.import_module(module)
        except ImportError as err:
            pytest.skip(
                f"{module} cannot be imported ({err}): pip install 'llama-cpp-python[server]'"
            )
    from mllmrec_pyg.reasoning.backends.openai_backend import OpenAIBackend
    from mllmrec_pyg.testing import serve_llamacpp

    requests = [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS[:3])]
    with serve_llamacpp(models.smollm2_path(), n_ctx=1024, log_dir=tmp_path) as server:
        backend = OpenAIBackend(
            model=server.model,
            base_url=server.base_url,
            max_concurrency=2,
            max_new_tokens=MAX_NEW,
            timeout=120,
            progress=False,
        )
        with backend, GenerationStore(tmp_path / "gen.sqlite") as store:
            texts = run_requests("t", requests, backend, store, show_progress=False)
            assert store.count("t") == 3
        log = server.log_path.read_text(errors="replace")
    assert all(texts) and len(set(texts)) == 3, texts
    assert log.count("POST /v1/chat/completions") >= 3
    # the server renders the same chat template: its first words are the in-process ones
    local = smol.generate(requests)
    assert [t.split()[:1] for t in texts] == [t.split()[:1] for t in local]
