"""The ``transformers`` backend: Gemma 3 in 4-bit NF4 through bitsandbytes.

Requests are sorted by image count and prompt length, cut into batches of
``batch_size`` and generated with left padding, so one forward pass serves many
prompts; texts come back in request order. Images go through the model's chat
template (an ``{"type": "image"}`` part per image before the text), exactly as
the processor expects.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mllmrec_pyg.reasoning.backends._common import (
    BackendInputError,
    check_requests,
    folder_digest,
    load_image,
    make_config,
    require,
)
from mllmrec_pyg.reasoning.backends.base import GenerationRequest

logger = logging.getLogger(__name__)

_QUANTIZATIONS = ("nf4", "fp4", "none")
_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class TransformersBackendConfig:
    """Settings of :class:`TransformersBackend`.

    Args:
        model: a Hugging Face model id or a local folder
            (``google/gemma-3-27b-it`` by default).
        revision: the model revision (hub ids only).
        local_files_only: never reach the hub; also on when ``HF_HUB_OFFLINE=1``.
        quantization: ``"nf4"`` (4-bit NormalFloat, the default), ``"fp4"`` or
            ``"none"`` (weights in ``compute_dtype``).
        double_quant: quantise the 4-bit scales too (saves ~0.4 bit/param).
        compute_dtype: ``"auto"`` = bfloat16 on GPU, float32 on CPU.
        device: ``"auto"`` = CUDA when available, else CPU; or e.g. ``"cuda:1"``.
        device_map: passed to ``from_pretrained``; ``None`` = ``"auto"`` on GPU
            (spreads a model over all visible GPUs), the one device otherwise.
        attn_implementation: e.g. ``"sdpa"`` or ``"eager"``; ``None`` = default.
        batch_size: prompts per forward pass.
        max_new_tokens: generation budget (160 tokens ~ the prompts' 100 words).
        do_sample: sample instead of greedy decoding (greedy by default).
        temperature: sampling temperature (only with ``do_sample``).
        top_p: nucleus sampling mass (only with ``do_sample``).
        top_k: top-k sampling (only with ``do_sample``).
        seed: torch seed set before sampling.
        system_prompt: an optional system turn before each prompt.
        progress: show a progress bar when a call spans several batches.
    """

    model: str = "google/gemma-3-27b-it"
    revision: str | None = None
    local_files_only: bool = False
    quantization: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"
    device: str = "auto"
    device_map: str | dict[str, Any] | None = None
    attn_implementation: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 160
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int = 0
    system_prompt: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.quantization not in _QUANTIZATIONS:
            raise ValueError(f"quantization={self.quantization!r}: choose one of {_QUANTIZATIONS}")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(f"compute_dtype={self.compute_dtype!r}: choose one of {_DTYPES}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if not self.do_sample and self.temperature not in (0.0, 1.0):
            logger.warning(
                "temperature=%g has no effect with greedy decoding; set do_sample=True to sample",
                self.temperature,
            )


class TransformersBackend:
    """Gemma 3 (or another ``Gemma3ForConditionalGeneration`` folder) in-process.

    The model is loaded on the first :meth:`generate` call (or :meth:`load`),
    so building the backend and asking for its :meth:`fingerprint` is cheap.

    Args:
        config: the settings; :class:`TransformersBackendConfig` defaults when ``None``.
        **overrides: single settings to change, e.g. ``batch_size=4``.

    Example::

        backend = TransformersBackend(model="/models/gemma-3-27b-it", batch_size=8)
        texts = backend.generate([GenerationRequest("item-1", prompt, ["1.jpg"])])
    """

    name = "transformers"

    def __init__(self, config: TransformersBackendConfig | None = None, **overrides: Any):
        self.config = make_config(TransformersBackendConfig, config, overrides)
        self._model = None
        self._processor = None
        self._device = None
        self._batch_limit: int | None = None  # lowered after a CUDA out-of-memory error

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(model={c.model!r}, quantization={c.quantization!r}, "
            f"batch_size={c.batch_size}, max_new_tokens={c.max_new_tokens}, "
            f"do_sample={c.do_sample})"
        )

    @property
    def parallelism(self) -> int:
        """How many requests are worth handing to one :meth:`generate` call."""
        return self.config.batch_size

    @property
    def model(self):
        """The loaded ``Gemma3ForConditionalGeneration`` (loads it on first use)."""
        return self.load()._model

    @property
    def processor(self):
        """The loaded processor (tokenizer with left padding + image processor)."""
        return self.load()._processor

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    # ----------------------------------------------------------------- setup
    def _torch(self):
        return require("torch", "llm", "transformers backend")

    def _resolved_device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        return "cuda" if self._torch().cuda.is_available() else "cpu"

    def _resolved_dtype_name(self) -> str:
        if self.config.compute_dtype != "auto":
            return self.config.compute_dtype
        return "float32" if self._resolved_device() == "cpu" else "bfloat16"

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the generated text (not batch size or device)."""
        c = self.config
        fp: dict[str, Any] = {
            "backend": self.name,
            "model": c.model,
            "revision": c.revision,
            "quantization": c.quantization,
            "double_quant": c.double_quant if c.quantization != "none" else None,
            "compute_dtype": self._resolved_dtype_name(),
            "max_new_tokens": c.max_new_tokens,
            "do_sample": c.do_sample,
            "system_prompt": c.system_prompt,
        }
        if c.do_sample:
            fp.update(temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, seed=c.seed)
        folder = Path(c.model).expanduser()
        if folder.is_dir():
            fp["weights"] = folder_digest(folder)
        return fp

    def load(self) -> TransformersBackend:
        """Load processor and model now (otherwise the first ``generate`` does)."""
        if self._model is not None:
            return self
        torch = self._torch()
        transformers = require("transformers", "llm", "transformers backend")
        c = self.config
        device = self._resolved_device()
        dtype = getattr(torch, self._resolved_dtype_name())
        common = {"revision": c.revision, "local_files_only": c.local_files_only}

        # transformers >= 4.56 calls it `dtype`; older releases `torch_dtype`
        major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
        dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        kwargs: dict[str, Any] = {dtype_key: dtype, **common}
        if c.quantization != "none":
            require("bitsandbytes", "llm", "4-bit transformers backend")
            require("accelerate", "llm", "4-bit transformers backend")
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=c.quantization,
                bnb_4bit_use_double_quant=c.double_quant,
                bnb_4bit_compute_dtype=dtype,
            )
        if c.device_map is not None:
            kwargs["device_map"] = c.device_map
        elif device.startswith("cuda") and ":" not in device:
            kwargs["device_map"] = "auto"
        else:
            kwargs["device_map"] = {"": device}
        if c.attn_implementation is not None:
            kwargs["attn_implementation"] = c.attn_implementation

        start = time.perf_counter()
        logger.info(
            "loading %s (%s, compute %s) on %s",
            c.model,
            "4-bit " + c.quantization if c.quantization != "none" else "unquantised",
            self._resolved_dtype_name(),
            kwargs["device_map"],
        )
        self._check_local_folder()
        try:
            processor = transformers.AutoProcessor.from_pretrained(c.model, **common)
        except (OSError, ValueError) as err:
            raise OSError(
                f"cannot load the processor of {c.model!r}: {err}\nPass a local model folder, or "
                "download the model first (Gemma is gated: accept its licence on the model page "
                "and log in with `hf auth login`)."
            ) from err
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise BackendInputError(
                f"{c.model}: AutoProcessor did not give a multimodal processor "
                "(tokenizer + image processor); is this a Gemma 3 vision model?"
            )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = transformers.Gemma3ForConditionalGeneration.from_pretrained(c.model, **kwargs)
        model.eval()
        self._processor, self._model = processor, model
        self._device = model.device
        logger.info(
            "loaded %s in %.1f s: %.2f GB of weights on %s",
            c.model,
            time.perf_counter() - start,
            model.get_memory_footprint() / 1e9,
            self._device,
        )
        return self

    def _check_local_folder(self) -> None:
        """A model given as a path must be a Hugging Face model folder."""
        name = self.config.model
        path = Path(name).expanduser()
        if not (path.is_absolute() or name.startswith((".", "~")) or path.exists()):
            return  # a hub id
        if not path.is_dir():
            raise FileNotFoundError(f"model folder {path} does not exist")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")

    def _generation_config(self):
        c = self.config
        gen = copy.deepcopy(self._model.generation_config)
        gen.max_new_tokens = c.max_new_tokens
        gen.do_sample = c.do_sample
        if c.do_sample:
            gen.temperature, gen.top_p, gen.top_k = c.temperature, c.top_p, c.top_k
        else:
            # Gemma's shipped generation_config samples (top_k 64, top_p 0.95);
            # greedy decoding must switch those off explicitly.
            gen.temperature, gen.top_p, gen.top_k = None, None, None
        if gen.pad_token_id is None:
            gen.pad_token_id = self._processor.tokenizer.pad_token_id
        return gen

    # ------------------------------------------------------------ generation
    def _messages(self, request: GenerationRequest) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in request.images]
        content.append({"type": "text", "text": request.prompt})
        messages: list[dict[str, Any]] = []
        if self.config.system_prompt:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": self.config.system_prompt}]}
            )
        messages.append({"role": "user", "content": content})
        return messages

    def _batches(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """Request indices grouped into batches of equal image count and
        similar prompt length (little padding)."""
        order = sorted(
            range(len(requests)),
            key=lambda i: (len(requests[i].images), len(requests[i].prompt), i),
        )
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else None
            if (
                last is not None
                and len(last) < self.config.batch_size
                and len(requests[last[0]].images) == len(requests[i].images)
            ):
                last.append(i)
            else:
                batches.append([i])
        return batches

    def _generate_batch(self, batch: list[GenerationRequest], gen_config) -> list[str]:
        torch = self._torch()
        processor = self._processor
        texts = [
            processor.apply_chat_template(
                self._messages(r), add_generation_prompt=True, tokenize=False
            )
            for r in batch
        ]
        images = [[load_image(img, r.key) for img in r.images] for r in batch]
        inputs = processor(
            text=texts,
            images=images if any(images) else None,
            return_tensors="pt",
            padding=True,
        ).to(self._device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = self._model.generate(**inputs, generation_config=gen_config)
        return [
            t.strip() for t in processor.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
        ]

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate one text per request, in request order.

        Args:
            requests: prompts, each with zero or more images (PIL or paths).

        Raises:
            BackendInputError: a request is malformed or an image unreadable
                (the message names the request key and the file).
        """
        requests = check_requests(requests)
        if not requests:
            return []
        self.load()
        gen_config = self._generation_config()
        if self.config.do_sample:
            self._torch().manual_seed(self.config.seed)

        results: list[str | None] = [None] * len(requests)
        batches = self._batches(requests)
        with tqdm(
            total=len(requests),
            desc=f"{self.name} generate",
            unit="req",
            disable=not self.config.progress or len(batches) < 2,
            leave=False,
        ) as bar:
            for idx in batches:
                start = time.perf_counter()
                texts = self._generate_fitting(requests, idx, gen_config)
                for i, text in zip(idx, texts):
                    results[i] = text
                logger.debug("batch of %d in %.2f s", len(idx), time.perf_counter() - start)
                bar.update(len(idx))
        return [r if r is not None else "" for r in results]  # every index is filled

    def _generate_fitting(
        self, requests: list[GenerationRequest], idx: list[int], gen_config
    ) -> list[str]:
        """Generate for ``requests[idx]``, halving the batch on a CUDA out-of-memory
        error (greedy answers do not depend on the batch they are in). The smaller
        size is kept for the rest of the run; one request that still does not fit
        is an error."""
        torch = self._torch()
        limit = self._batch_limit or len(idx)
        out: list[str] = []
        pos = 0
        while pos < len(idx):
            chunk = idx[pos : pos + limit]
            try:
                out.extend(self._generate_batch([requests[i] for i in chunk], gen_config))
            except torch.cuda.OutOfMemoryError as err:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if len(chunk) == 1:
                    raise RuntimeError(
                        f"request {requests[chunk[0]].key!r} does not fit in GPU memory even "
                        "alone; lower --max-new-tokens, use smaller images or a larger GPU"
                    ) from err
                limit = len(chunk) // 2  # a chunk here has at least 2 requests
                self._batch_limit = limit
                logger.warning(
                    "out of GPU memory with %d prompts in a batch; continuing with %d",
                    len(chunk),
                    limit,
                )
                continue
            pos += len(chunk)
        return out
