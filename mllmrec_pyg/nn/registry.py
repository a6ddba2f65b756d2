"""The model registry: every model's name, config, search space, flags and roles.

A model describes itself where it is defined, with :func:`register_model` on
its class::

    @register_model(
        "mymodel",
        label="MyModel",
        space={"train.lr": (1e-3, 1e-2), "model.reg_weight": (0.0, 1e-4)},
        flags={"embedding_dim": Flag("embedding_dim", "embedding width d")},
        host=True,
    )
    class MyModel(RankingModel):
        name = "mymodel"
        config_class = MyModelConfig
        ...

Everything above the models is derived from these registrations: the
checkpoint and command-line names (:data:`MODELS`), the candidates of the
validation-only search and the tuned comparison (:data:`CANDIDATES`), the
model flags of ``mllmrec train`` (:func:`model_flags`, :func:`model_switches`),
the plug-and-play hosts (:func:`hosts`) and the labels and reference numbers
of the results report (:func:`label`, :func:`paper_numbers`). A new model is
its module (imported by :mod:`mllmrec_pyg.nn`) and its test file.

A search space maps ``"section.field"`` keys (sections ``train``, ``model``
and ``graph``: ``train.lr``, ``model.reg_weight``, ``graph.alpha``) to the
values searched (:func:`split_point`). Settings searched together share one
key joined by ``+`` and take tuples of values, one per setting:
``{"model.a+model.b": ((0.0, 0.0), (0.2, 0.3))}`` is two points, both off or
both on, where two separate keys would be four.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.fields import check_fields
from mllmrec_pyg.nn.base import RankingModel

#: the sections of a search-space key (``"train.lr"``)
SECTIONS = ("train", "model", "graph")
#: joins the keys of settings searched together (``"model.a+model.b"``)
JOINT = "+"

Space = Mapping[str, Sequence[Any]]
Ablation = tuple[Mapping[str, Any], Mapping[str, Any]]

#: learning rates and L2 weights searched by most candidates
LR = (5e-4, 1e-3, 2e-3, 5e-3)
REG = (0.0, 1e-5, 1e-4, 1e-3)
#: the refined graph's threshold and co-occurrence top-K, searched by every candidate that
#: reads it
REFINED = {"graph.alpha": (0.4, 0.5, 0.6, 0.7), "graph.k_c": (5, 10, 15, 20)}
#: the ``paper`` key of the R@20 on Amazon Baby that the paper's Table 1 reports
BABY_R20 = "Baby R@20"
#: the ``paper`` key of a host's row in the paper's plug-and-play table (RQ3), from 1
RQ3_HOST = "RQ3 host"
#: the hosts of the paper's plug-and-play table not implemented here, label -> row
PAPER_HOSTS_NOT_HERE = {"DOGE": 5}


@dataclass(frozen=True)
class Flag:
    """A value option of ``mllmrec train`` that sets one field of a model's config.

    Args:
        field: the config field it sets.
        help: what the field is, for ``--help`` (models with the same text share a line).
    """

    field: str
    help: str = ""


#: the ``--embedding-dim`` flag of every model that has one
EMBEDDING = Flag("embedding_dim", "embedding width d")


@dataclass(frozen=True)
class Switch:
    """A switch of ``mllmrec train`` that sets one field of a model's config to ``value``.

    Args:
        field: the config field it sets.
        value: the value it sets when given.
        help: what the switch does, for ``--help``.
    """

    field: str
    value: Any
    help: str = ""


@dataclass(frozen=True)
class Candidate:
    """A model as it is compared: a registered model with fixed settings and a search space.

    Args:
        key: the name in results (``<model>-refined``).
        model: the registry name.
        fixed: model config values that define the candidate (not searched).
        space: ``"section.field" -> values``; sections ``train``, ``model``, ``graph``.
    """

    key: str
    model: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    space: Space = field(default_factory=dict)

    def needs(self, points: Sequence[Mapping[str, Any]] = ({},)) -> frozenset[str]:
        """What the model reads besides training pairs at any of ``points``
        (:meth:`~mllmrec_pyg.nn.base.RankingModel.requires`)."""
        cls = model_class(self.model)
        out: set[str] = set()
        for point in points:
            values = {**self.fixed, **split_point(point)["model"]}
            out |= cls.requires(make_config(self.model, values))
        return frozenset(out)

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the search space (the empty point when there is none)."""
        keys = sorted(self.space)
        return [
            dict(zip(keys, values)) for values in itertools.product(*(self.space[k] for k in keys))
        ]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model and what it says about itself (see :func:`register_model`).

    Attributes:
        name: the registry name.
        cls: the model class.
        label: its name in tables and reports.
        candidates: its own candidate (keyed ``name``) and its variants.
        flags: ``mllmrec train`` value options, ``flag -> Flag``.
        switches: ``mllmrec train`` switches, ``flag -> Switch``.
        host: whether it is a plug-and-play host.
        from_options: ``config field -> mllmrec train option`` it takes unless set.
        ablations: ``name -> (graph changes, model config changes)``.
        paper: reported numbers, ``key -> value``.
    """

    name: str
    cls: type[RankingModel]
    label: str
    candidates: tuple[Candidate, ...]
    flags: Mapping[str, Flag]
    switches: Mapping[str, Switch]
    host: bool
    from_options: Mapping[str, str]
    ablations: Mapping[str, Ablation]
    paper: Mapping[str, float]


#: registry name -> its registration, in registration order
SPECS: dict[str, ModelSpec] = {}
#: registry name -> model class
MODELS: dict[str, type[RankingModel]] = {}
#: candidate key -> candidate: each model's own (keyed by its name) and its variants, in
#: registration order (:func:`mllmrec_pyg.tuning.register_candidate` adds more)
CANDIDATES: dict[str, Candidate] = {}

M = TypeVar("M", bound=type[RankingModel])


def register_model(
    name: str,
    *,
    label: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    space: Space | None = None,
    candidates: Mapping[str, tuple[Mapping[str, Any], Space]] | None = None,
    flags: Mapping[str, Flag] | None = None,
    switches: Mapping[str, Switch] | None = None,
    host: bool = False,
    from_options: Mapping[str, str] | None = None,
    ablations: Mapping[str, Ablation] | None = None,
    paper: Mapping[str, float] | None = None,
) -> Callable[[M], M]:
    """A class decorator that registers a :class:`~mllmrec_pyg.nn.base.RankingModel`.

    Args:
        name: the registry name (checkpoints, ``--model``, results); the class's
            ``name`` is set to it.
        label: the name in tables and reports (default: ``name``).
        fixed: the model config values of the model's own candidate.
        space: the search space of the model's own candidate (keyed ``name``).
        candidates: further candidates, ``key -> (fixed config values, space)``,
            e.g. ``<name>-refined`` reading the refined graph.
        flags: ``mllmrec train`` value options, ``flag -> Flag`` (``flag`` with
            underscores: ``embedding_dim`` is ``--embedding-dim``).
        switches: ``mllmrec train`` switches, ``flag -> Switch``.
        host: the model reads an item-item graph through its ``item_graph``
            config field and can read the refined one instead (a plug-and-play
            host; ``--refined-graph``).
        from_options: ``config field -> option`` of ``mllmrec train`` whose value
            the field takes unless set (``{"knn_k": "k_s"}``).
        ablations: one-switch changes of the tuned settings,
            ``name -> (graph changes, model config changes)``, trained when the
            model is the proposed one of the comparison.
        paper: numbers reported for the model elsewhere, shown beside the results
            (``{"Baby R@20": 0.0992}``).

    Raises:
        ValueError: ``name`` or a candidate key is registered already, or a flag or
            switch names no field of the model's config.
    """

    def decorate(cls: M) -> M:
        if name in SPECS:
            raise ValueError(f"model {name!r} is registered already ({SPECS[name].cls.__name__})")
        cls.name = name
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        options = {**(flags or {}), **(switches or {})}
        if host:
            options["refined_graph"] = Switch("item_graph", RELATED)
        for flag, option in options.items():
            if option.field not in known:
                flag = "--" + flag.replace("_", "-")
                raise ValueError(f"{name}: {flag} sets no field of {cls.config_class.__name__}")
        cands = (Candidate(name, name, dict(fixed or {}), dict(space or {})),) + tuple(
            Candidate(key, name, dict(f), dict(s)) for key, (f, s) in (candidates or {}).items()
        )
        for cand in cands:
            split_point(dict.fromkeys(cand.space))  # "<train|model|graph>.<field>" keys
        taken = sorted(c.key for c in cands if c.key in CANDIDATES)
        if taken:
            raise ValueError(f"{name}: candidate(s) {taken} are registered already")
        SPECS[name] = ModelSpec(
            name=name,
            cls=cls,
            label=label or name,
            candidates=cands,
            flags=dict(flags or {}),
            switches=dict(switches or {}),
            host=host,
            from_options=dict(from_options or {}),
            ablations=dict(ablations or {}),
            paper=dict(paper or {}),
        )
        MODELS[name] = cls
        CANDIDATES.update((c.key, c) for c in cands)
        return cls

    return decorate


def unregister_model(name: str) -> None:
    """Remove model ``name``, its candidates and its options (e.g. a model a test registered)."""
    del SPECS[name], MODELS[name]
    for key in [k for k, c in CANDIDATES.items() if c.model == name]:
        del CANDIDATES[key]


def model_spec(name: str) -> ModelSpec:
    """The registration of model ``name``."""
    model_class(name)
    return SPECS[name]


def model_class(name: str) -> type[RankingModel]:
    """The model class registered as ``name`` (see :data:`MODELS`)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None


def label(name: str) -> str:
    """The name of model ``name`` in tables and reports (``name`` when it is not registered)."""
    return SPECS[name].label if name in SPECS else name


K = TypeVar("K")
V = TypeVar("V")


class Derived(Mapping[K, V], Generic[K, V]):
    """A read-only mapping computed from the registry on each access, so that it
    includes the models registered after it was made."""

    def __init__(self, build: Callable[[], Mapping[K, V]]) -> None:
        self._build = build

    def __getitem__(self, key: K) -> V:
        return self._build()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(dict(self._build()))


def hosts() -> dict[str, str]:
    """The plug-and-play hosts, ``registry name -> label``, in registration order."""
    return {s.name: s.label for s in SPECS.values() if s.host}


def model_flags() -> dict[str, dict[str, Flag]]:
    """``flag -> {model: Flag}`` of every registered model's value options."""
    out: dict[str, dict[str, Flag]] = {}
    for spec in SPECS.values():
        for flag, option in spec.flags.items():
            out.setdefault(flag, {})[spec.name] = option
    return out


def model_switches() -> dict[str, dict[str, Switch]]:
    """``flag -> {model: Switch}`` of every registered model's switches; every host has
    ``refined_graph`` (``item_graph`` set to the refined graph)."""
    out: dict[str, dict[str, Switch]] = {}
    for spec in SPECS.values():
        for flag, option in spec.switches.items():
            out.setdefault(flag, {})[spec.name] = option
    for name in hosts():
        out.setdefault("refined_graph", {})[name] = Switch("item_graph", RELATED)
    return out


def paper_numbers(key: str) -> dict[str, float]:
    """``model -> value`` of the reported number ``key`` (see ``paper`` of :func:`register_model`)."""
    return {s.name: s.paper[key] for s in SPECS.values() if key in s.paper}


def paper_hosts() -> list[str]:
    """The labels of the hosts of the paper's plug-and-play table (RQ3), in its order: the
    registered models with an ``RQ3_HOST`` row and :data:`PAPER_HOSTS_NOT_HERE`."""
    rows = {label(name): row for name, row in paper_numbers(RQ3_HOST).items()}
    return sorted(
        {**rows, **PAPER_HOSTS_NOT_HERE}, key=lambda h: {**rows, **PAPER_HOSTS_NOT_HERE}[h]
    )


def takes_seed(name: str) -> bool:
    """Whether model ``name``'s config has a ``seed`` (seeded from the run's seed)."""
    return "seed" in {f.name for f in dataclasses.fields(model_class(name).config_class)}


def _settings(key: str, value: Any) -> list[tuple[str, Any]]:
    """``(setting key, value)`` of one search key: itself, or each setting of a joint key
    with its value (``None`` for each when ``value`` is ``None``)."""
    names = key.split(JOINT)
    if len(names) == 1:
        return [(key, value)]
    if value is None:
        return [(name, None) for name in names]
    if isinstance(value, (tuple, list)) and len(value) == len(names):
        return list(zip(names, value))
    raise ValueError(
        f"search key {key!r} sets {len(names)} settings together and takes "
        f"{len(names)} values, got {value!r}"
    )


def split_point(point: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"train.lr": x, "model.d": y}`` -> ``{"train": {"lr": x}, "model": {"d": y}, "graph": {}}``.

    A joint key ``"model.a+model.b"`` takes a tuple (or list) of as many values, one per
    setting; ``None`` in place of the value checks the keys only.
    """
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in point.items():
        for one, v in _settings(key, value):
            section, _, name = one.partition(".")
            if section not in out or not name:
                raise ValueError(f"search key {one!r} must be '<train|model|graph>.<field>'")
            if name in out[section]:
                raise ValueError(f"search key {key!r}: {one} is set twice")
            out[section][name] = v
    return out


def point_text(point: Mapping[str, Any]) -> str:
    """A grid point as ``"train.lr=0.001 model.a=0.2 model.b=0.3"`` (a joint key's settings
    written one by one)."""
    return " ".join(f"{k}={v}" for key, value in point.items() for k, v in _settings(key, value))


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config dataclass of model ``name`` with ``values``.

    Raises:
        ValueError: an unknown field; a value of the wrong type or range
            (:class:`~mllmrec_pyg.fields.FieldError`, from the field's annotation;
            see :func:`~mllmrec_pyg.fields.check_fields`) or one the config refuses.
    """
    cls = model_class(name).config_class
    values = dict(values or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{name}: unknown config field(s) {unknown}; known: {sorted(fields)}")
    check_fields(cls, values, owner=name)
    return cls(**values)


def build_model(name: str, data: HeteroData, config: Any = None, **values: Any) -> RankingModel:
    """Build model ``name`` for ``data``, from a config object or keyword values."""
    if config is None:
        config = make_config(name, values)
    elif values:
        config = dataclasses.replace(config, **values)
    return model_class(name).from_data(data, config)


__all__ = [
    "BABY_R20",
    "CANDIDATES",
    "Candidate",
    "Derived",
    "EMBEDDING",
    "Flag",
    "LR",
    "MODELS",
    "ModelSpec",
    "REFINED",
    "PAPER_HOSTS_NOT_HERE",
    "REG",
    "RQ3_HOST",
    "SPECS",
    "Switch",
    "build_model",
    "hosts",
    "label",
    "make_config",
    "model_class",
    "model_flags",
    "model_spec",
    "model_switches",
    "paper_hosts",
    "paper_numbers",
    "register_model",
    "split_point",
    "takes_seed",
    "unregister_model",
]
