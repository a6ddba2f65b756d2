"""Neural modules: the item LightGCN, MLLMRec and baselines."""

from mllmrec_pyg.nn.base import RankingModel, Recommender
from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN
from mllmrec_pyg.nn.registry import MODELS, Flag, Switch, build_model, register_model
from mllmrec_pyg.nn.tower import Tower

# Each model registers itself when its module is imported (mllmrec_pyg.nn.registry), in
# this order: the order in which the comparison lists the candidates.
# isort: off
from mllmrec_pyg.nn.baselines import (
    BPRMF,
    BPRConfig,
    LightGCNConfig,
    LightGCNRecommender,
    MostPop,
    MostPopConfig,
)
from mllmrec_pyg.nn.freedom import FREEDOM, FREEDOMConfig, knn_item_graph
from mllmrec_pyg.nn.langgcn import LangGCN, LangGCNConfig
from mllmrec_pyg.nn.mllmrec import MLLMRec, MLLMRecConfig
from mllmrec_pyg.nn.vbpr import VBPR, VBPRConfig
from mllmrec_pyg.nn.lattice import LATTICE, LATTICEConfig
from mllmrec_pyg.nn.lgmrec import LGMRec, LGMRecConfig
from mllmrec_pyg.nn.smore import SMORE, SMOREConfig
from mllmrec_pyg.nn.gume import GUME, GUMEConfig
from mllmrec_pyg.nn.soil import SOIL, SOILConfig
from mllmrec_pyg.nn.slmrec import SLMRec, SLMRecConfig

# isort: on

__all__ = [
    "ItemLightGCN",
    "MLLMRec",
    "MLLMRecConfig",
    "Tower",
    "MostPop",
    "MostPopConfig",
    "BPRMF",
    "BPRConfig",
    "LightGCNRecommender",
    "LightGCNConfig",
    "FREEDOM",
    "FREEDOMConfig",
    "LangGCN",
    "LangGCNConfig",
    "RankingModel",
    "Recommender",
    "MODELS",
    "Flag",
    "Switch",
    "build_model",
    "knn_item_graph",
    "register_model",
    "VBPR",
    "VBPRConfig",
    "LATTICE",
    "LATTICEConfig",
    "LGMRec",
    "LGMRecConfig",
    "SMORE",
    "SMOREConfig",
    "SLMRec",
    "SLMRecConfig",
    "GUME",
    "GUMEConfig",
    "SOIL",
    "SOILConfig",
]
