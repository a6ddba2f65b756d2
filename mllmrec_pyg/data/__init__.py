"""Loaders into the HeteroData contract, splitting, and the schema constants."""

from mllmrec_pyg.data.amazon import load_amazon
from mllmrec_pyg.data.mmrec import load_mmrec
from mllmrec_pyg.data.movielens import load_movielens
from mllmrec_pyg.data.schema import (
    COOCCURS,
    INTERACTS,
    ITEM,
    RELATED,
    SEMANTIC,
    USER,
    SchemaError,
    validate,
)
from mllmrec_pyg.data.split import k_core, per_user_split
from mllmrec_pyg.data.synthetic import make_synthetic

__all__ = [
    "load_amazon",
    "COOCCURS",
    "INTERACTS",
    "ITEM",
    "RELATED",
    "SEMANTIC",
    "USER",
    "SchemaError",
    "validate",
    "k_core",
    "per_user_split",
    "make_synthetic",
    "load_mmrec",
    "load_movielens",
]
