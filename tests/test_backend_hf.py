"""The ``transformers`` backend on a tiny random Gemma 3, loaded in 4-bit NF4 on CPU.

Everything runs the real code: the processor's chat template, Pillow images
(in memory and on disk), bitsandbytes 4-bit layers, batched left-padded
``generate`` and decoding. The reference for the batched output is the plain
one-prompt-at-a-time ``model.generate`` written out here by hand.
"""

from __future__ import annotations

import json
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
    b = TransformersBackend(model=str(tiny_gemma_dir), batch_size=3, max_new_tokens=MAX_NEW)
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
    small = TransformersBackend(model=str(tiny_gemma_dir), batch_size=3, max_new_tokens=MAX_NEW)
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
