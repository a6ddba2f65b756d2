import pytest
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data import INTERACTS, SchemaError, make_synthetic, validate
from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs


def _data():
    data = HeteroData()
    data["user"].num_nodes = 3
    data["item"].num_nodes = 4
    data[INTERACTS].edge_index = torch.tensor([[0, 1, 2], [0, 1, 3]])
    return data


def test_valid_object_passes():
    validate(_data())
    data = make_synthetic(seed=0, num_users=100, num_items=60)
    validate(JaccardCoOccurrence(k=3)(data), require=["held_out", "cooccurs"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: delattr(d["user"], "num_nodes"), "num_nodes"),
        (
            lambda d: d[INTERACTS].__setattr__("edge_index", torch.tensor([[0, 3], [0, 0]])),
            r"source ids out of range \[0, 3\) at edge position\(s\) \[1\]",
        ),
        (
            lambda d: d[INTERACTS].__setattr__("edge_index", torch.tensor([[0], [-1]])),
            r"target ids out of range",
        ),
        (
            lambda d: d[INTERACTS].__setattr__("edge_index", torch.tensor([[0.0], [1.0]])),
            "torch.long",
        ),
        (
            lambda d: d[INTERACTS].__setattr__("val_edge_index", torch.tensor([[0], [9]])),
            r"val_edge_index: target ids out of range",
        ),
        (lambda d: d["item"].__setattr__("x", torch.randn(3, 2)), "3 rows for 4 nodes"),
        (
            lambda d: d["user"].__setattr__("x", torch.tensor([[0.0], [float("nan")], [1.0]])),
            r"NaN or inf in 1 row\(s\): \[1\]",
        ),
        (
            lambda d: d["item"].__setattr__("x", torch.ones(4, dtype=torch.long).view(4, 1)),
            "floating point",
        ),
        (lambda d: d[INTERACTS].__setattr__("time", torch.zeros(2)), "time has 2 entries"),
    ],
)
def test_errors_name_what_is_wrong(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(SchemaError, match=message):
        validate(data)


def test_missing_types_and_required_keys():
    data = HeteroData()
    data["item"].num_nodes = 2
    with pytest.raises(SchemaError, match="no node type 'user'"):
        validate(data)
    data["user"].num_nodes = 2
    with pytest.raises(SchemaError, match="no edge type"):
        validate(data)
    data = _data()
    with pytest.raises(SchemaError, match=r"data\['item'\].x is missing"):
        validate(data, require=["item.x"])
    with pytest.raises(SchemaError, match="val_edge_index is missing"):
        validate(data, require=["held_out"])
    with pytest.raises(SchemaError, match="apply the transform"):
        validate(data, require=["related"])
    with pytest.raises(SchemaError, match="no edge type"):
        MergeGraphs()(data)
