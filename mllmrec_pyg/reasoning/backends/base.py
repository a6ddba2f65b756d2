"""The one interface every MLLM backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass
class GenerationRequest:
    """One prompt for the model.

    Args:
        key: the entity the text is for (item or user id), used by the store.
        prompt: the user turn's text.
        images: images shown before the text (``PIL.Image.Image`` or file paths).
    """

    key: str
    prompt: str
    images: list[Any] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """An MLLM that turns requests into text.

    ``fingerprint()`` returns everything that changes the output (model name or
    path, generation settings); the generation store hashes it together with the
    prompt so that a changed setting never reuses stale text.
    """

    name: str

    def fingerprint(self) -> dict[str, Any]: ...

    def generate(self, requests: list[GenerationRequest]) -> list[str]: ...


def image_path(image: Any) -> Path | None:
    """The file path of an image given as a path, else ``None``."""
    if isinstance(image, (str, Path)):
        return Path(image)
    return None
