"""Neural modules: the item LightGCN, MLLMRec and baselines."""

from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN

__all__ = ["ItemLightGCN"]
