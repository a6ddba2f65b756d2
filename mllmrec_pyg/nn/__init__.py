"""Neural modules: the item LightGCN, MLLMRec and baselines."""

from mllmrec_pyg.nn.base import RankingModel, Recommender
from mllmrec_pyg.nn.baselines import (
    BPRMF,
    BPRConfig,
    LightGCNConfig,
    LightGCNRecommender,
    MostPop,
    MostPopConfig,
)
from mllmrec_pyg.nn.freedom import FREEDOM, FREEDOMConfig
from mllmrec_pyg.nn.gume import GUME, GUMEConfig
from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN
from mllmrec_pyg.nn.langgcn import LangGCN, LangGCNConfig
from mllmrec_pyg.nn.lattice import LATTICE, LATTICEConfig
from mllmrec_pyg.nn.lgmrec import LGMRec, LGMRecConfig
from mllmrec_pyg.nn.mllmrec import MLLMRec, MLLMRecConfig, Tower
from mllmrec_pyg.nn.registry import MODELS, build_model
from mllmrec_pyg.nn.slmrec import SLMRec, SLMRecConfig
from mllmrec_pyg.nn.smore import SMORE, SMOREConfig
from mllmrec_pyg.nn.soil import SOIL, SOILConfig
from mllmrec_pyg.nn.vbpr import VBPR, VBPRConfig

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
    "build_model",
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
