"""The settings of the pipeline stages, each declared once, with its default.

One dataclass per stage: :class:`DataConfig` (which dataset),
:class:`TextConfig` (item and user text, the reasoning backend, the
encoder) and :class:`GraphConfig` (the refined item-item graph). Training
settings are :class:`~mllmrec_pyg.train.TrainConfig` and each model's
settings its own config dataclass (``mllmrec_pyg.nn``). The command line,
the experiments and the examples read their defaults from these classes
(:func:`default_of`), so a default is changed in one place.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mllmrec_pyg.fields import FieldError, check_fields
from mllmrec_pyg.paths import movielens_root
from mllmrec_pyg.transforms import RefineItemGraph

#: datasets known by name; anything else is the path of a folder
NAMED_DATASETS = ("synthetic", "movielens")
USER_TEXT_SOURCES = ("preferences", "history")


def default_of(cls: type, name: str) -> Any:
    """The default value of field ``name`` of dataclass ``cls`` (for argparse)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
            raise ValueError(f"{cls.__name__}.{name} has no default")
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def _positive(obj: Any, *names: str) -> None:
    """Refuse fields ``names`` of dataclass ``obj`` that are not positive integers (or None).

    Raises:
        FieldError: naming the first field at fault (the command line adds its flag).
    """
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise FieldError(name, value, "must be positive")
    check_fields(type(obj), {name: getattr(obj, name) for name in names})


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how it is split.

    Args:
        dataset: ``"synthetic"`` (the embedded catalog), ``"movielens"`` (a
            folder in the ml-latest-small layout) or the path of a folder in
            the MMRec format (as published, or written by ``mllmrec
            prepare-amazon``).
        root: the MovieLens folder (default :func:`mllmrec_pyg.paths.movielens_root`).
        seed: seed of the synthetic catalog and of the per-user split.
        num_users: synthetic catalog: users drawn before 5-core (``None``: default size).
        num_items: synthetic catalog: items drawn before 5-core.
    """

    dataset: str = "synthetic"
    root: str | None = None
    seed: int = 0
    num_users: int | None = None
    num_items: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "num_users", "num_items")
        if self.root is not None:
            object.__setattr__(self, "root", str(self.root))
        object.__setattr__(self, "dataset", str(self.dataset))

    @property
    def is_folder(self) -> bool:
        return self.dataset not in NAMED_DATASETS

    @property
    def name(self) -> str:
        """The dataset's name in results: the folder's name, else ``dataset``."""
        return Path(self.dataset).name if self.is_folder else self.dataset

    def tag(self) -> str:
        """A short, file-system-safe name: ``synthetic``, ``synthetic-150x80``, ``movielens``,
        ``movielens-<folder>`` (another MovieLens folder), ``mmrec-<folder>``; ``-seed<n>`` for a
        split seed other than 0. Caches and results folders are named by it."""
        if self.dataset == "synthetic":
            tag = "synthetic"
            if self.num_users is not None or self.num_items is not None:
                tag += f"-{self.num_users or 'd'}x{self.num_items or 'd'}"
        elif self.dataset == "movielens":
            tag = "movielens"
            if self.root is not None and Path(self.root).resolve() != movielens_root().resolve():
                tag += "-" + Path(self.root).resolve().name
        else:
            tag = "mmrec-" + Path(self.dataset).resolve().name
        if self.seed != 0:
            tag += f"-seed{self.seed}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)


@dataclass(frozen=True)
class TextConfig:
    """Item and user text, and how it becomes feature vectors.

    Item features encode ``data["item"].text``. User features encode one
    preference text per user, written from TRAINING interactions only.

    Args:
        user_text: ``"preferences"`` -- the reasoning stage's Prompt 2 answered
            by ``backend``; ``"history"`` -- a plain summary of each user's
            recent training items (no language model).
        backend: the reasoning backend (``"none"``: the offline stand-in;
            ``"transformers"``, ``"openai"``: a language model).
        backend_model: model path or name passed to the backend.
        backend_url: server URL (``openai`` backend).
        backend_options: further backend settings (e.g. generation settings),
            as ``((key, value), ...)``.
        token_budget: Prompt 2 token budget (the most recent items are kept).
        encoder: sentence-transformers folder (default: the bundled MiniLM).
    """

    user_text: str = "preferences"
    backend: str = "none"
    backend_model: str | None = None
    backend_url: str | None = None
    backend_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    token_budget: int = 4096
    encoder: str | None = None

    def __post_init__(self) -> None:
        if self.user_text not in USER_TEXT_SOURCES:
            raise ValueError(
                f"user_text must be one of {USER_TEXT_SOURCES}, got {self.user_text!r}"
            )
        _positive(self, "token_budget")
        options = self.backend_options
        if isinstance(options, dict):
            options = tuple(sorted(options.items()))
        object.__setattr__(self, "backend_options", tuple(tuple(kv) for kv in options))

    def backend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`mllmrec_pyg.reasoning.get_backend` (besides the name)."""
        kwargs: dict[str, Any] = dict(self.backend_options)
        if self.backend_model is not None:
            kwargs["model"] = self.backend_model
        if self.backend_url is not None:
            kwargs["base_url"] = self.backend_url
        return kwargs

    def tag(self) -> str:
        """A short, file-system-safe name of the settings that differ from the defaults
        (``""`` for the defaults), e.g. ``transformers-smollm2-budget1024``: results made
        with another text source are kept apart by it."""
        default = TextConfig()
        parts = []
        if self.user_text != default.user_text:
            parts.append(self.user_text)
        if self.backend != default.backend:
            parts.append(self.backend)
        for name in ("backend_model", "backend_url", "encoder"):
            value = getattr(self, name)
            if value is not None:
                parts.append(Path(str(value).rstrip("/")).name or str(value))
        if self.token_budget != default.token_budget:
            parts.append(f"budget{self.token_budget}")
        parts += [f"{k}{v}" for k, v in self.backend_options]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))

    def user_source(self, full_history: bool = False) -> str:
        """A file-name-safe name of the user text source (``none_train_history``, ``history``)."""
        if self.user_text == "history":
            return "history"
        mode = "full_history" if full_history else "train_history"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.backend}_{mode}")


@dataclass(frozen=True)
class GraphConfig:
    """The refined item-item graph :math:`S^*` (see :class:`~mllmrec_pyg.transforms.RefineItemGraph`).

    Args:
        k_s: semantic top-K (the item itself is one of them with ``loop``).
        alpha: similarity threshold; ``None`` keeps plain top-K (*w/o GD*).
        k_c: co-occurrence top-K.
        cooccurrence: merge the co-occurrence graph (``False``: *w/o TE*).
        loop: the item counts as one of its own top-K (a self-loop).
        knn_backend: :class:`~mllmrec_pyg.transforms.ThresholdKNN`'s search:
            ``"auto"`` is the exact search up to 50,000 items (1M on CUDA) and
            faiss-clustered IVF self-join beyond; ``"torch"`` is always exact.
    """

    k_s: int = 10
    alpha: float | None = 0.7
    k_c: int = 10
    cooccurrence: bool = True
    loop: bool = True
    knn_backend: str = "auto"

    def __post_init__(self) -> None:
        _positive(self, "k_s", "k_c")
        check_fields(type(self), {n: getattr(self, n) for n in ("cooccurrence", "loop")})
        if self.alpha is not None and (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not -1.0 <= float(self.alpha) <= 1.0
        ):
            raise ValueError(f"alpha must be a number in [-1, 1] or None, got {self.alpha!r}")
        self.transform()  # the transforms check the rest (e.g. an unknown knn_backend) now

    def transform(self) -> RefineItemGraph:
        """The transform that writes ``data["item", "related", "item"]``."""
        return RefineItemGraph(
            k_s=self.k_s,
            alpha=self.alpha,
            k_c=self.k_c,
            cooccurrence=self.cooccurrence,
            loop=self.loop,
            knn_options={"backend": self.knn_backend},
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ["DataConfig", "GraphConfig", "TextConfig", "default_of"]
