"""Helpers for tests, examples and benchmarks that must run without network or GPU."""

from mllmrec_pyg.testing.serve import (
    ServedModel,
    free_port,
    serve_llamacpp,
    serve_transformers,
)
from mllmrec_pyg.testing.tiny_gemma import TinyGemmaConfig, build_tiny_gemma

__all__ = [
    "ServedModel",
    "TinyGemmaConfig",
    "build_tiny_gemma",
    "free_port",
    "serve_llamacpp",
    "serve_transformers",
]
