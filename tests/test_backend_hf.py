"""The ``transformers`` backend on a tiny random Gemma 3, loaded in 4-bit NF4 on CPU.

Everything runs the real code: the processor's chat template, Pillow images
(in memory and on disk), bitsandbytes 4-bit layers, batched left-padded
``generate`` and decoding. The reference for the batched output is the plain
one-prompt-at-a-time ``model.generate`` written out here by hand.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import struct
import sys

import pytest
import torch
from PIL import Image

from mllmrec_pyg.reasoning.backends import (
    Backend,
    BackendInputError,
    GenerationRequest,
    get_backend,
)
from mllmrec_pyg.reasoning.backends.hf import TransformersBackend, TransformersBackendConfig
from mllmrec_pyg.testing import TinyGemmaConfig, build_tiny_gemma

MAX_NEW = 6


def _noise(seed: int, size=(48, 40)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


@pytest.fixture(scope="module")
def backend(tiny_gemma_dir) -> TransformersBackend:
    # on the CPU everywhere: the exact-answer checks below need float32 kernels whose
    # results do not depend on the batch (a GPU's bf16 ones can flip a near-tied token)
    b = TransformersBackend(
        model=str(tiny_gemma_dir), batch_size=3, max_new_tokens=MAX_NEW, device="cpu"
    )
    b.load()
    return b


@pytest.fixture(scope="module")
def requests_mixed(tmp_path_factory) -> list[GenerationRequest]:
    folder = tmp_path_factory.mktemp("images")
    _noise(10).save(folder / "a.png")
    _noise(11, (30, 70)).save(folder / "b.jpg", quality=90)
    Image.new("L", (20, 20), 200).save(folder / "gray.png")  # not RGB on disk
    prompt = "please describe the image for the baby dataset"
    return [
        GenerationRequest("p0", prompt, [_noise(1)]),
        GenerationRequest("p1", "soft blue blanket", [folder / "a.png"]),
        GenerationRequest("p2", prompt, [str(folder / "b.jpg")]),
        GenerationRequest("p3", "the user likes a red toy and a green bottle"),
        GenerationRequest("p4", prompt, [_noise(2, (90, 30))]),
        GenerationRequest("p5", "color", [folder / "gray.png"]),
        GenerationRequest("p6", "two images", [_noise(3), _noise(4)]),
    ]


def _reference_one(model, processor, request: GenerationRequest) -> str:
    """Independent reference: one request, no padding, straight ``model.generate``."""
    content = [{"type": "image"} for _ in request.images]
    content.append({"type": "text", "text": request.prompt})
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    images = [
        im.convert("RGB") if isinstance(im, Image.Image) else Image.open(im).convert("RGB")
        for im in request.images
    ]
    inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt")
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    return processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_tiny_gemma_folder(tiny_gemma_dir):
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_gemma_dir)
    tok = processor.tokenizer
    assert [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id] == [0, 1, 2]
    assert (tok.boi_token, tok.eoi_token, tok.image_token) == (
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    )
    config = AutoConfig.from_pretrained(tiny_gemma_dir)
    assert config.model_type == "gemma3"
    assert config.image_token_index == tok.convert_tokens_to_ids("<image_soft_token>")
    assert config.boi_token_index == tok.convert_tokens_to_ids("<start_of_image>")
    # Gemma's turn format from the chat template, with the image placeholder
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "red toy"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert (
        text
        == "<bos><start_of_turn>user\n<start_of_image>red toy<end_of_turn>\n<start_of_turn>model\n"
    )
    # the processor expands the image into mm_tokens_per_image soft tokens
    enc = processor(text=[text], images=[[_noise(0)]], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids.count(config.image_token_index) == config.mm_tokens_per_image == 4
    assert enc["pixel_values"].shape == (1, 3, 64, 64)


def test_tiny_gemma_builder_reuses_and_validates(tmp_path):
    cfg = TinyGemmaConfig(num_hidden_layers=1)
    folder = build_tiny_gemma(tmp_path / "m", cfg)
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_gemma(tmp_path / "m", cfg) == folder
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert (
        json.loads((folder / "tiny_gemma.json").read_text())["tiny_gemma"]["num_hidden_layers"] == 1
    )
    with pytest.raises(ValueError, match="vision_hidden_size=48"):
        build_tiny_gemma(tmp_path / "bad", TinyGemmaConfig(vision_hidden_size=48))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a model")
    with pytest.raises(FileExistsError, match="refusing"):
        build_tiny_gemma(tmp_path / "other", cfg)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_loads_in_4bit_nf4(backend):
    import bitsandbytes as bnb

    layers = [m for m in backend.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "no 4-bit layers: the model was not quantised"
    assert {m.weight.quant_state.quant_type for m in layers} == {"nf4"}
    # double quantisation: the 4-bit scales are themselves quantised
    assert all(m.weight.quant_state.nested for m in layers)
    names = {n for n, m in backend.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert any("vision_tower" in n for n in names) and any("language_model" in n for n in names)
    assert backend.model.device.type == "cpu"
    assert backend.processor.tokenizer.padding_side == "left"


@pytest.mark.slow
def test_batched_generation_matches_one_at_a_time(backend, requests_mixed):
    out = backend.generate(requests_mixed)
    assert len(out) == len(requests_mixed)
    # 7 requests, batch 3, grouped by image count -> padded batches really happen
    assert max(len(b) for b in backend._batches(requests_mixed)) == 3
    ref = [_reference_one(backend.model, backend.processor, r) for r in requests_mixed]
    assert out == ref
    assert all(isinstance(t, str) and t for t in out)
    specials = backend.processor.tokenizer.all_special_tokens
    assert not [t for t in out if any(s in t for s in specials)]  # decoded, specials dropped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nf4_on_cuda(tiny_gemma_dir, requests_mixed):
    """The default device on a GPU machine: NF4 weights with bf16 compute on CUDA,
    greedy answers repeatable, and the image reaching the model there too."""
    import bitsandbytes as bnb

    b = TransformersBackend(model=str(tiny_gemma_dir), batch_size=3, max_new_tokens=MAX_NEW)
    b.load()
    assert b.model.device.type == "cuda"
    layers = [m for m in b.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and {m.weight.quant_state.quant_type for m in layers} == {"nf4"}
    assert all(m.weight.device.type == "cuda" for m in layers)
    assert b.fingerprint()["compute_dtype"] == "bfloat16"
    out = b.generate(requests_mixed)
    assert len(out) == len(requests_mixed) and all(isinstance(t, str) and t for t in out)
    assert b.generate(requests_mixed) == out  # the same batches give the same greedy text
    prompt = "soft blue blanket"
    images = [_noise(s) for s in range(5)]
    texts = b.generate([GenerationRequest(str(i), prompt, [im]) for i, im in enumerate(images)])
    assert len(set(texts)) >= 2, texts


def test_image_content_reaches_the_model(backend):
    prompt = "soft blue blanket"
    images = [_noise(s) for s in range(5)] + [
        Image.new("RGB", (48, 40), c) for c in ("black", "white")
    ]
    texts = backend.generate(
        [GenerationRequest(str(i), prompt, [im]) for i, im in enumerate(images)]
    )
    twice = backend.generate([GenerationRequest("again", prompt, [_noise(3)])])
    assert twice[0] == texts[3]  # same pixels, same greedy text
    # only the pixels differ between these prompts, yet the texts do
    assert len(set(texts)) >= 3, texts


def test_order_kept_and_empty_input(backend, requests_mixed):
    reordered = list(reversed(requests_mixed))
    assert backend.generate(reordered) == list(reversed(backend.generate(requests_mixed)))
    assert backend.generate([]) == []


def test_out_of_memory_halves_the_batch_and_keeps_every_answer(
    backend, requests_mixed, tiny_gemma_dir, monkeypatch
):
    """A CUDA out-of-memory error (raised here for batches over 1 prompt) makes
    the backend retry in smaller batches; the answers are the same."""
    expected = backend.generate(requests_mixed)
    small = TransformersBackend(
        model=str(tiny_gemma_dir), batch_size=3, max_new_tokens=MAX_NEW, device="cpu"
    )
    small.load()
    real = small._generate_batch
    sizes: list[int] = []

    def tight_memory(batch, gen_config):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, gen_config)

    monkeypatch.setattr(small, "_generate_batch", tight_memory)
    assert small.generate(requests_mixed) == expected
    assert small._batch_limit == 1
    assert sizes.count(3) == 1  # the first full batch failed once, later ones start small
    assert sizes.count(1) == len(requests_mixed)

    def never_fits(batch, gen_config):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(small, "_generate_batch", never_fits)
    with pytest.raises(RuntimeError, match="'p3' does not fit in GPU memory"):
        small.generate([requests_mixed[3]])


def test_bad_images_name_key_and_file(backend, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(BackendInputError, match=r"'item-7'.*nope\.jpg"):
        backend.generate([GenerationRequest("item-7", "x", [missing])])
    broken = tmp_path / "broken.png"
    broken.write_text("this is not a png")
    with pytest.raises(BackendInputError, match=r"'item-8'.*broken\.png"):
        backend.generate([GenerationRequest("item-8", "x", [broken])])
    with pytest.raises(BackendInputError, match="request 0 is a str"):
        backend.generate(["just a prompt"])
    with pytest.raises(BackendInputError, match="PIL image or a file path"):
        backend.generate([GenerationRequest("item-9", "x", [b"bytes"])])


def test_fingerprint(tiny_gemma_dir, tmp_path):
    base = TransformersBackend(model=str(tiny_gemma_dir))
    fp = base.fingerprint()
    assert not base.loaded  # fingerprinting never loads the model
    assert fp["backend"] == "transformers" and fp["quantization"] == "nf4"
    assert fp["compute_dtype"] == ("bfloat16" if torch.cuda.is_available() else "float32")
    assert fp == TransformersBackend(model=str(tiny_gemma_dir), batch_size=1).fingerprint()
    for change in ({"max_new_tokens": 7}, {"quantization": "none"}, {"do_sample": True}):
        assert TransformersBackend(model=str(tiny_gemma_dir), **change).fingerprint() != fp
    # other weights in a folder of the same name and layout -> another digest
    other = build_tiny_gemma(tmp_path / "same-layout", TinyGemmaConfig(seed=1))
    same = build_tiny_gemma(tmp_path / "same-layout-2", TinyGemmaConfig(seed=0))
    assert (other / "model.safetensors").stat().st_size == (
        same / "model.safetensors"
    ).stat().st_size
    assert TransformersBackend(model=str(other)).fingerprint()["weights"] != fp["weights"]
    assert TransformersBackend(model=str(same)).fingerprint()["weights"] == fp["weights"]


def test_config_validation_and_factory(tiny_gemma_dir):
    with pytest.raises(ValueError, match="quantization='int3'"):
        TransformersBackendConfig(quantization="int3")
    with pytest.raises(ValueError, match="batch_size=0"):
        TransformersBackend(batch_size=0)
    with pytest.raises(TypeError, match="no setting.*batchsize"):
        get_backend("transformers", batchsize=4)
    with pytest.raises(ValueError, match="unknown backend 'gemma'.*none, openai, transformers"):
        get_backend("gemma")
    b = get_backend("transformers", model=str(tiny_gemma_dir), batch_size=5)
    assert isinstance(b, TransformersBackend) and isinstance(b, Backend)
    assert b.config.batch_size == b.parallelism == 5 and b.config.quantization == "nf4"
    assert b.config.max_new_tokens == 160 and b.config.do_sample is False
    assert TransformersBackendConfig().model == "google/gemma-3-27b-it"
    offline = get_backend("none")
    assert offline.name == "none" and isinstance(offline, Backend)


def test_unusable_model_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist does not exist"):
        TransformersBackend(model=str(tmp_path / "does-not-exist")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty has no config.json"):
        TransformersBackend(model=str(tmp_path / "empty")).load()
    # a hub id that is not cached, with the hub switched off (conftest)
    with pytest.raises(OSError, match="cannot load the processor of 'nobody/no-such-model'"):
        TransformersBackend(model="nobody/no-such-model").load()


def test_missing_bitsandbytes_names_the_extra(tiny_gemma_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    b = TransformersBackend(model=str(tiny_gemma_dir))
    with pytest.raises(ImportError, match=r"pip install 'mllmrec-pyg\[llm\]'"):
        b.load()


@pytest.mark.slow
def test_results_stored_through_describe_items(tiny_gemma_dir, tmp_path):
    """Prompt 1 built, images passed, texts decoded and committed to the store;
    a second run finds everything stored and never loads the model."""
    from torch_geometric.data import HeteroData

    from mllmrec_pyg.reasoning import GenerationStore, describe_items
    from mllmrec_pyg.reasoning.prompts import item_prompt

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"item{i}.png")
        _noise(100 + i).save(paths[-1])
    data = HeteroData()
    data["item"].num_nodes = 4
    data["item"].text = ["red toy", "blue bottle", "green bib", "white crib"]
    images = [paths[0], paths[1], None, paths[2]]

    b1 = TransformersBackend(model=str(tiny_gemma_dir), batch_size=2, max_new_tokens=MAX_NEW)
    with GenerationStore(tmp_path / "gen.sqlite") as store:
        fused = describe_items(data, b1, "Baby", images=images, store=store, show_progress=False)
        assert store.count("item_description") == 3
    descriptions = data["item"].image_description
    assert descriptions[2] == "" and all(descriptions[i] for i in (0, 1, 3))
    assert fused[2] == "green bib"
    for i in (0, 1, 3):
        assert fused[i].startswith(data["item"].base_text[i]) and fused[i].endswith(descriptions[i])
    # what was generated is exactly Prompt 1 on each image
    ref = [
        _reference_one(b1.model, b1.processor, GenerationRequest("r", item_prompt("Baby"), [p]))
        for p in paths
    ]
    assert [descriptions[i] for i in (0, 1, 3)] == ref

    data2 = HeteroData()
    data2["item"].num_nodes = 4
    data2["item"].text = list(data["item"].base_text)
    b2 = TransformersBackend(model=str(tiny_gemma_dir), batch_size=2, max_new_tokens=MAX_NEW)
    with GenerationStore(tmp_path / "gen.sqlite") as store:
        again = describe_items(data2, b2, "Baby", images=images, store=store, show_progress=False)
    assert again == fused
    assert not b2.loaded  # nothing was left to generate


# -- text-only causal LMs ----------------------------------------------------------------------
_TEXT_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ m['role'] }} {{ m['content'] }}<end_of_turn>"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model {% endif %}"
)
TEXT_PROMPTS = [
    "soft blue blanket",
    "the user prefers a red toy and a green bottle for the baby",
    "please describe a durable stroller",
    "cotton bib",
]


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random text-only Llama with a chat template (no images anywhere)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mllmrec_pyg.testing.tiny_gemma import _build_tokenizer

    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = _build_tokenizer()
    tok.chat_template = _TEXT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_backend(tiny_llama_dir) -> TransformersBackend:
    b = TransformersBackend(
        model=str(tiny_llama_dir),
        quantization="none",
        batch_size=3,
        max_new_tokens=MAX_NEW,
        repetition_penalty=1.3,
        no_repeat_ngram_size=2,
        progress=False,
    )
    b.load()
    return b


def _reference_text(backend: TransformersBackend, prompt: str) -> str:
    tok, c = backend.tokenizer, backend.config
    enc = tok.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(backend.model.device)
    with torch.inference_mode():
        out = backend.model.generate(
            **enc,
            max_new_tokens=c.max_new_tokens,
            do_sample=False,
            repetition_penalty=c.repetition_penalty,
            no_repeat_ngram_size=c.no_repeat_ngram_size,
            pad_token_id=tok.pad_token_id,
        )
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_text_only_model_batched_equals_one_at_a_time(text_backend):
    assert type(text_backend.model).__name__ == "LlamaForCausalLM"
    assert text_backend.tokenizer.padding_side == "left"
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(TEXT_PROMPTS)]
    out = text_backend.generate(requests)
    assert [len(b) for b in text_backend._batches(requests)] == [3, 1]
    assert out == [_reference_text(text_backend, p) for p in TEXT_PROMPTS]
    assert all(out) and len(set(out)) > 1
    assert text_backend.stats["requests"] == len(TEXT_PROMPTS)
    with pytest.raises(BackendInputError, match="'x' has 1 image.*text-only"):
        text_backend.generate([GenerationRequest("x", "toy", [_noise(0)])])


def test_no_repeat_ngram_and_repetition_penalty_reach_generate(text_backend):
    plain = TransformersBackend(
        model=text_backend.config.model,
        quantization="none",
        max_new_tokens=24,
        progress=False,
    )
    plain._model, plain._tokenizer, plain._multimodal = (
        text_backend.model,
        text_backend.tokenizer,
        False,
    )
    plain._device = text_backend.model.device
    strict = copy.copy(plain)
    strict.config = dataclasses.replace(plain.config, no_repeat_ngram_size=1)
    strict.stats = dict(plain.stats)
    req = [GenerationRequest("0", TEXT_PROMPTS[1])]
    words = strict.generate(req)[0].split()
    assert len(words) == len(set(words))  # no 1-gram twice
    assert plain._generation_config().repetition_penalty in (None, 1.0)
    assert text_backend._generation_config().repetition_penalty == 1.3
    assert text_backend._generation_config().no_repeat_ngram_size == 2


def test_anti_looping_settings_in_fingerprint_and_validated(tiny_llama_dir):
    base = TransformersBackend(model=str(tiny_llama_dir), quantization="none")
    fp = base.fingerprint()
    assert "repetition_penalty" not in fp and "no_repeat_ngram_size" not in fp  # old keys kept
    assert fp["max_new_tokens"] == 160
    for change in ({"repetition_penalty": 1.2}, {"no_repeat_ngram_size": 3}):
        other = TransformersBackend(model=str(tiny_llama_dir), quantization="none", **change)
        assert other.fingerprint() != fp
    assert (
        TransformersBackend(
            model=str(tiny_llama_dir), quantization="none", repetition_penalty=1.0
        ).fingerprint()
        == fp
    )
    sampled = TransformersBackend(model=str(tiny_llama_dir), do_sample=True, seed=1)
    assert sampled.fingerprint()["seeding"] == "per-request"
    assert (
        sampled.fingerprint()
        != TransformersBackend(model=str(tiny_llama_dir), do_sample=True, seed=2).fingerprint()
    )
    with pytest.raises(ValueError, match="repetition_penalty=0"):
        TransformersBackendConfig(repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size=-1"):
        TransformersBackendConfig(no_repeat_ngram_size=-1)
    with pytest.raises(ValueError, match="gguf_file='model.bin'"):
        TransformersBackendConfig(gguf_file="model.bin")


def test_gguf_sources_are_checked(tmp_path):
    (tmp_path / "only").mkdir()
    # a GGUF header with no tensors and no key/values (so no chat template)
    (tmp_path / "only" / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    with pytest.raises(FileNotFoundError, match=r"only has no config.json.*m\.gguf.*--gguf-file"):
        TransformersBackend(model=str(tmp_path / "only")).load()
    with pytest.raises(FileNotFoundError, match=r"x\.gguf does not exist \(option model\)"):
        TransformersBackend(model=str(tmp_path / "x.gguf"))
    with pytest.raises(FileNotFoundError, match=r"y\.gguf does not exist"):
        TransformersBackend(model=str(tmp_path / "only"), gguf_file="y.gguf")
    with pytest.raises(FileNotFoundError, match="needs model to be a local folder"):
        TransformersBackend(model="some/hub-id", gguf_file="m.gguf")
    b = TransformersBackend(model=str(tmp_path / "only"), gguf_file="m.gguf", quantization="none")
    fp = b.fingerprint()
    assert fp["model"] == "m.gguf" and fp["format"] == "gguf" and str(tmp_path) not in str(fp)


def test_cpu_out_of_memory_also_halves_the_batch(text_backend, monkeypatch):
    expected = text_backend.generate(
        [GenerationRequest(str(i), p) for i, p in enumerate(TEXT_PROMPTS)]
    )
    small = copy.copy(text_backend)
    small._batch_limit = None
    real = TransformersBackend._generate_batch
    sizes: list[int] = []

    def tight(batch, gen_config):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
            )
        return real(small, batch, gen_config)

    monkeypatch.setattr(small, "_generate_batch", tight)
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(TEXT_PROMPTS)]
    assert small.generate(requests) == expected
    assert small._batch_limit == 1 and sizes.count(3) == 1

    def other_error(batch, gen_config):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(small, "_generate_batch", other_error)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not mistaken for OOM
        small.generate(requests[:1])


def test_store_round_trip_through_compressed_jsonl(text_backend, tmp_path):
    """Texts exported as .jsonl.gz and imported elsewhere are found by the same
    backend settings: nothing is generated again."""
    from mllmrec_pyg.reasoning import GenerationStore
    from mllmrec_pyg.reasoning.runner import run_requests

    requests = [GenerationRequest(str(i), p) for i, p in enumerate(TEXT_PROMPTS)]
    with GenerationStore(tmp_path / "a.sqlite") as a:
        texts = run_requests("user_preference", requests, text_backend, a, show_progress=False)
        assert a.export_jsonl(tmp_path / "out.jsonl.gz") == len(requests)
    raw = (tmp_path / "out.jsonl.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip
    with GenerationStore(tmp_path / "a.sqlite") as a:
        a.export_jsonl(tmp_path / "again.jsonl.gz")
    assert (tmp_path / "again.jsonl.gz").read_bytes() == raw  # reproducible bytes

    class NoModel:
        name = "transformers"

        def fingerprint(self):
            return text_backend.fingerprint()

        def generate(self, reqs):
            raise AssertionError(f"generated {len(reqs)} again")

    with GenerationStore(tmp_path / "b.sqlite") as b:
        assert b.import_jsonl(tmp_path / "out.jsonl.gz") == (len(requests), 0)
        assert b.import_jsonl(tmp_path / "out.jsonl.gz") == (0, len(requests))
        assert run_requests("user_preference", requests, NoModel(), b, show_progress=False) == texts
    (tmp_path / "bad.jsonl").write_text('{"task": "t"}\n')
    with (
        GenerationStore(tmp_path / "c.sqlite") as c,
        pytest.raises(ValueError, match=r"bad\.jsonl:1"),
    ):
        c.import_jsonl(tmp_path / "bad.jsonl")
