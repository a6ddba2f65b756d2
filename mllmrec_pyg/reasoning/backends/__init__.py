"""MLLM backends: ``transformers`` (4-bit Gemma 3), ``openai`` (served models), ``none``."""

from mllmrec_pyg.reasoning.backends.base import Backend, GenerationRequest

__all__ = ["Backend", "GenerationRequest"]
