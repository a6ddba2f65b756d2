"""MLLMRec in PyTorch Geometric.

Stages (data flows one way):
raw data -> :class:`~torch_geometric.data.HeteroData` -> reasoning (text)
-> encode (features) -> transforms (item graphs) -> model -> metrics.
"""

__version__ = "0.1.0"
