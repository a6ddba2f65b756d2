import pytest
import torch
from torch_geometric.nn import LGConv
from torch_geometric.typing import WITH_TORCH_SPARSE

from mllmrec_pyg.nn import ItemLightGCN
from mllmrec_pyg.nn.item_lightgcn import to_adj_t

from graph_reference import dense_item_lightgcn


def _directed_graph(n=12, e=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(n, (2, e), generator=g)
    w = torch.rand(e, generator=g, dtype=dtype) + 0.1
    # node n-1 has no in-edges (zero degree) and one out-edge
    keep = ei[1] != n - 1
    ei, w = ei[:, keep], w[keep]
    ei = torch.cat([ei, torch.tensor([[n - 1], [0]])], dim=1)
    w = torch.cat([w, torch.tensor([0.7], dtype=dtype)])
    return ei, w


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
def test_matches_dense_propagation_on_directed_weighted_graph(num_layers):
    n = 12
    ei, w = _directed_graph(n)
    x = torch.randn(n, 5, dtype=torch.float64)
    want = dense_item_lightgcn(x, ei, w, num_layers)
    layer = ItemLightGCN(num_layers)
    assert torch.allclose(layer(x, ei, w), want, atol=1e-10)
    adj = to_adj_t(ei, w, n)
    assert adj.layout == torch.sparse_csr
    assert torch.allclose(layer(x, adj), want, atol=1e-10)
    assert torch.allclose(layer(x, adj.to_sparse_coo()), want, atol=1e-10)


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch-sparse not installed")
def test_sparse_tensor_input():
    from torch_sparse import SparseTensor

    n = 12
    ei, w = _directed_graph(n)
    x = torch.randn(n, 5, dtype=torch.float64)
    adj_t = SparseTensor(row=ei[1], col=ei[0], value=w, sparse_sizes=(n, n))
    assert torch.allclose(ItemLightGCN(2)(x, adj_t), dense_item_lightgcn(x, ei, w, 2))


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
def test_matches_lgconv_sum_on_symmetric_graph(num_layers):
    n = 10
    g = torch.Generator().manual_seed(1)
    ei = torch.randint(n, (2, 25), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.unique(torch.cat([ei, ei.flip(0)], dim=1), dim=1)
    x = torch.randn(n, 4)
    conv = LGConv()
    want, h = x, x
    for _ in range(num_layers):
        h = conv(h, ei)
        want = want + h
    assert torch.allclose(ItemLightGCN(num_layers)(x, ei), want, atol=1e-6)


def test_gradients_flow_and_match_dense():
    n = 12
    ei, w = _directed_graph(n)
    x = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    w = w.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: ItemLightGCN(2)(x, ei, w), (x, w))
    target = torch.randn(n, 3, dtype=torch.float64)
    (ItemLightGCN(2)(x, ei, w) * target).sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad, w.grad = None, None
    (dense_item_lightgcn(x, ei, w, 2) * target).sum().backward()
    assert torch.allclose(gx, x.grad) and torch.allclose(gw, w.grad)
    # through the sparse path too
    x2 = x.detach().clone().requires_grad_(True)
    (ItemLightGCN(2)(x2, to_adj_t(ei, w.detach(), n)) * target).sum().backward()
    assert torch.allclose(x2.grad, gx)


def test_cached_and_unnormalised():
    n = 12
    ei, w = _directed_graph(n)
    x = torch.randn(n, 3, dtype=torch.float64)
    layer = ItemLightGCN(1, cached=True)
    first = layer(x, ei, w)
    assert torch.allclose(layer(x, ei, w * 5), first)  # cached graph reused
    raw = ItemLightGCN(1, normalize=False)(x, ei, w)
    s = torch.zeros(n, n, dtype=torch.float64).index_put((ei[1], ei[0]), w, accumulate=True)
    assert torch.allclose(raw, x + s @ x)
    with pytest.raises(ValueError):
        ItemLightGCN(-1)
