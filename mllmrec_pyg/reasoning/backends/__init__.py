"""MLLM backends: ``transformers`` (4-bit Gemma 3), ``llamacpp`` (GGUF models on CPU),
``openai`` (served models), ``none``.

All four implement :class:`~mllmrec_pyg.reasoning.backends.base.Backend`;
pick one by name with :func:`get_backend`. Their heavy dependencies are
imported only when a backend is built.
"""

from __future__ import annotations

from typing import Any

from mllmrec_pyg.reasoning.backends._common import BackendError, BackendInputError
from mllmrec_pyg.reasoning.backends.base import Backend, GenerationRequest

#: backend name -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "transformers": ("mllmrec_pyg.reasoning.backends.hf", "TransformersBackend"),
    "llamacpp": ("mllmrec_pyg.reasoning.backends.llamacpp", "LlamaCppBackend"),
    "openai": ("mllmrec_pyg.reasoning.backends.openai_backend", "OpenAIBackend"),
    "none": ("mllmrec_pyg.reasoning.backends.offline", "OfflineBackend"),
}


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend called ``name``.

    Args:
        name: ``"transformers"``, ``"llamacpp"``, ``"openai"`` or ``"none"``.
        **kwargs: the backend's settings, e.g. ``model=...``, ``batch_size=8``
            (transformers), ``parallel=8`` (llamacpp), ``base_url=...``, ``max_concurrency=8`` (openai);
            or ``config=`` a ready config object.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: a setting the backend does not have (named in the message).
    """
    import importlib

    try:
        module_name, class_name = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)


def __getattr__(attr: str) -> Any:
    # The backend classes load lazily: importing this package stays cheap.
    lazy = {
        "TransformersBackend": "mllmrec_pyg.reasoning.backends.hf",
        "TransformersBackendConfig": "mllmrec_pyg.reasoning.backends.hf",
        "LlamaCppBackend": "mllmrec_pyg.reasoning.backends.llamacpp",
        "LlamaCppBackendConfig": "mllmrec_pyg.reasoning.backends.llamacpp",
        "OpenAIBackend": "mllmrec_pyg.reasoning.backends.openai_backend",
        "OpenAIBackendConfig": "mllmrec_pyg.reasoning.backends.openai_backend",
        "OfflineBackend": "mllmrec_pyg.reasoning.backends.offline",
    }
    if attr in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[attr]), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendInputError",
    "GenerationRequest",
    "LlamaCppBackend",
    "LlamaCppBackendConfig",
    "OfflineBackend",
    "OpenAIBackend",
    "OpenAIBackendConfig",
    "TransformersBackend",
    "TransformersBackendConfig",
    "get_backend",
]
