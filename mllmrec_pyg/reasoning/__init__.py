"""The reasoning stage: item descriptions and user preferences from an MLLM."""

from mllmrec_pyg.reasoning.backends import get_backend
from mllmrec_pyg.reasoning.backends.base import Backend, GenerationRequest
from mllmrec_pyg.reasoning.backends.offline import OfflineBackend
from mllmrec_pyg.reasoning.items import describe_items
from mllmrec_pyg.reasoning.store import GenerationStore
from mllmrec_pyg.reasoning.users import (
    behaviour_lists,
    build_preference_prompts,
    generate_preferences,
)

__all__ = [
    "Backend",
    "GenerationRequest",
    "GenerationStore",
    "OfflineBackend",
    "behaviour_lists",
    "build_preference_prompts",
    "describe_items",
    "generate_preferences",
    "get_backend",
]
