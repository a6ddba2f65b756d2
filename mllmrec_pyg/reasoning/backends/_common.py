"""Pieces shared by the MLLM backends: errors, lazy imports, images, config helpers."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import io
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from mllmrec_pyg.reasoning.backends.base import GenerationRequest

C = TypeVar("C")


class BackendError(RuntimeError):
    """A generation request failed for good (after any retries).

    Args:
        message: what went wrong.
        key: the :attr:`GenerationRequest.key` of the failed request, if any.
        partial: texts already generated in the same call, by request index, so
            a caller can keep finished work.
    """

    def __init__(self, message: str, key: str | None = None, partial: dict[int, str] | None = None):
        super().__init__(message)
        self.key = key
        self.partial = dict(partial or {})


class BackendInputError(ValueError):
    """A request cannot be sent: an unreadable image, a wrong type."""


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency or fail with the extra that provides it.

    Args:
        module: the module to import.
        extra: the ``mllmrec-pyg`` extra that installs it (``llm``, ``serve``).
        purpose: the backend that needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"the {purpose} needs the Python package '{module.split('.')[0]}', which is not "
            f"installed; install the extra: pip install 'mllmrec-pyg[{extra}]'"
        ) from err


def make_config(cls: type[C], config: C | None, overrides: dict[str, Any]) -> C:
    """``config`` (or the defaults of ``cls``) with ``overrides`` applied.

    Raises:
        TypeError: an override that is not a field of ``cls``, naming it.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(
            f"{cls.__name__} has no setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    base = config if config is not None else cls()
    if not isinstance(base, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(base).__name__}")
    return dataclasses.replace(base, **overrides)  # type: ignore[type-var]


#: how a local backend lays out a prompt: the model's chat template, the few-shot
#: completion template for base models, or whichever the model supports
PROMPT_FORMATS = ("auto", "chat", "completion")


def check_generation_settings(config: Any) -> None:
    """Validate the generation settings the local backends share (``prompt_format``,
    ``max_new_tokens``, ``repetition_penalty``, ``no_repeat_ngram_size``), naming the
    setting at fault.

    Raises:
        ValueError: a setting out of its range.
    """
    if config.prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={config.prompt_format!r}: choose one of {PROMPT_FORMATS}")
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={config.max_new_tokens}: must be >= 1")
    if config.repetition_penalty is not None and config.repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty={config.repetition_penalty}: must be > 0")
    if config.no_repeat_ngram_size is not None and config.no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size={config.no_repeat_ngram_size}: must be >= 0")


def fill_from_preset(config: C, defaults: dict[str, Any]) -> C:
    """``config`` with a preset model name (``config.model``) replaced by the preset's
    file and every setting left at ``None`` filled from the preset (those of its settings
    this config has), then from ``defaults``."""
    from mllmrec_pyg.reasoning.models import PRESETS

    names = {f.name for f in dataclasses.fields(config)}
    fill: dict[str, Any] = {}
    preset = PRESETS.get(config.model)
    if preset is not None:
        fill["model"] = str(preset.locate())
        for name, value in preset.settings.items():
            if name in names and getattr(config, name) is None:
                fill[name] = value
    for name, value in defaults.items():
        if getattr(config, name) is None and name not in fill:
            fill[name] = value
    return dataclasses.replace(config, **fill) if fill else config


def progress_bar(backend: str, total: int, show: bool) -> tqdm:
    """The bar of one ``generate`` call of ``total`` requests."""
    return tqdm(total=total, desc=f"{backend} generate", unit="req", disable=not show, leave=False)


def check_requests(requests: Any) -> list[GenerationRequest]:
    """The requests as a list, each checked to be a :class:`GenerationRequest`."""
    if isinstance(requests, GenerationRequest):
        raise BackendInputError("generate() takes a list of GenerationRequest, not a single one")
    out = list(requests)
    for i, req in enumerate(out):
        if not isinstance(req, GenerationRequest):
            raise BackendInputError(
                f"request {i} is a {type(req).__name__}, expected GenerationRequest"
            )
        if not isinstance(req.prompt, str):
            raise BackendInputError(f"request {req.key!r}: prompt must be str")
    return out


def load_image(image: Any, key: str):
    """A request image as an RGB ``PIL.Image.Image``.

    Args:
        image: a PIL image or a path to an image file.
        key: the request key, named in errors.

    Raises:
        BackendInputError: the file is missing or not an image, naming both.
    """
    pil = require("PIL.Image", "llm", "image loading")
    if isinstance(image, pil.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            with pil.open(path) as opened:
                return opened.convert("RGB")
        except FileNotFoundError as err:
            raise BackendInputError(f"request {key!r}: image file not found: {path}") from err
        except (OSError, pil.UnidentifiedImageError) as err:
            raise BackendInputError(f"request {key!r}: cannot read image {path}: {err}") from err
    raise BackendInputError(
        f"request {key!r}: an image must be a PIL image or a file path, got {type(image).__name__}"
    )


_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def image_data_url(image: Any, key: str, max_side: int | None = None) -> str:
    """A request image as a ``data:`` URL (base64).

    A JPEG/PNG/WEBP file within ``max_side`` is sent byte for byte; anything
    else (PIL images, other formats, resized images) is encoded as PNG.

    Args:
        image: a PIL image or a path to an image file.
        key: the request key, named in errors.
        max_side: when set, images whose longer side exceeds it are shrunk
            (aspect kept) before sending.
    """
    pil = require("PIL.Image", "serve", "openai backend's image encoding")
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            raw = path.read_bytes()
            with pil.open(io.BytesIO(raw)) as probe:
                fmt, size = probe.format, probe.size
        except FileNotFoundError as err:
            raise BackendInputError(f"request {key!r}: image file not found: {path}") from err
        except (OSError, pil.UnidentifiedImageError) as err:
            raise BackendInputError(f"request {key!r}: cannot read image {path}: {err}") from err
        if fmt in ("JPEG", "PNG", "WEBP") and (max_side is None or max(size) <= max_side):
            return f"data:{_MIME[fmt]};base64,{base64.b64encode(raw).decode('ascii')}"
    img = load_image(image, key)
    if max_side is not None and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


_FOLDER_FILES = (
    "config.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def folder_digest(folder: Path, sample_bytes: int = 1 << 20) -> str:
    """A short digest of a local model folder, cheap even for a 27B model.

    It covers the small config files byte for byte and, for every weight file,
    its name, its size and its first and last ``sample_bytes`` (the
    safetensors header with every tensor's shape and offset, plus the start
    and end of the tensor data), so a retrained or re-quantised checkpoint in
    the same folder gets a new digest without reading gigabytes.
    """
    h = hashlib.sha256()
    for name in _FOLDER_FILES:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}\0".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(sample_bytes))
            if size > sample_bytes:
                fh.seek(max(sample_bytes, size - sample_bytes))
                h.update(fh.read())
    return h.hexdigest()[:16]
