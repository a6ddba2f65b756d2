"""Graph refinement as PyG transforms on the HeteroData contract."""

from mllmrec_pyg.transforms.jaccard import JaccardCoOccurrence
from mllmrec_pyg.transforms.merge import MergeGraphs
from mllmrec_pyg.transforms.refine import RefineItemGraph
from mllmrec_pyg.transforms.threshold_knn import ThresholdKNN

__all__ = ["ThresholdKNN", "JaccardCoOccurrence", "MergeGraphs", "RefineItemGraph"]
