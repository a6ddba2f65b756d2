"""Model names used by the command line and by checkpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.fields import check_fields
from mllmrec_pyg.nn.base import RankingModel
from mllmrec_pyg.nn.baselines import BPRMF, LightGCNRecommender, MostPop
from mllmrec_pyg.nn.freedom import FREEDOM
from mllmrec_pyg.nn.gume import GUME
from mllmrec_pyg.nn.langgcn import LangGCN
from mllmrec_pyg.nn.lattice import LATTICE
from mllmrec_pyg.nn.lgmrec import LGMRec
from mllmrec_pyg.nn.mllmrec import MLLMRec
from mllmrec_pyg.nn.slmrec import SLMRec
from mllmrec_pyg.nn.smore import SMORE
from mllmrec_pyg.nn.soil import SOIL
from mllmrec_pyg.nn.vbpr import VBPR

MODELS: dict[str, type[RankingModel]] = {
    cls.name: cls
    for cls in (MLLMRec, BPRMF, LightGCNRecommender, MostPop, FREEDOM, LangGCN)
    + (VBPR, LATTICE, LGMRec, SMORE, SLMRec, GUME, SOIL)
}


def model_class(name: str) -> type[RankingModel]:
    """The model class registered as ``name`` (see :data:`MODELS`)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None


def takes_seed(name: str) -> bool:
    """Whether model ``name``'s config has a ``seed`` (seeded from the run's seed)."""
    return "seed" in {f.name for f in dataclasses.fields(model_class(name).config_class)}


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
