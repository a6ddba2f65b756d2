"""Checks every multimodal baseline (VBPR, LATTICE, LGMRec, SLMRec, SMORE, GUME, SOIL)
passes alike: registration and requirements, training on clustered data (the loss falls,
the test recall beats MostPop's), checkpoint round trips and the tuning candidates. Each
model's equations are checked against dense references in its own test file."""

import pytest
import torch
import torch.nn.functional as F
from conftest import clustered_data

from mllmrec_pyg.checkpoint import load_checkpoint, save_checkpoint
from mllmrec_pyg.data import RELATED
from mllmrec_pyg.nn import GUME, LATTICE, SMORE, SOIL, VBPR, LGMRec, SLMRec
from mllmrec_pyg.nn.mm_common import in_batch_softmax, info_nce
from mllmrec_pyg.nn.registry import MODELS, build_model, make_config
from mllmrec_pyg.train import TrainConfig, Trainer

CLASSES = {
    "vbpr": VBPR,
    "lattice": LATTICE,
    "lgmrec": LGMRec,
    "slmrec": SLMRec,
    "smore": SMORE,
    "gume": GUME,
    "soil": SOIL,
}
#: models that take the refined item graph as a plug-and-play variant
PLUG_AND_PLAY = ("lattice", "smore", "gume", "soil")

#: name -> (build_model kwargs, bound on last/first epoch loss, scores compared exactly)
TRAINING = {
    "vbpr": ({"embedding_dim": 16, "reg_weight": 1e-4}, 0.5, True),
    "lattice": ({"embedding_dim": 16, "feat_embed_dim": 8, "knn_k": 4}, 0.5, False),
    "lgmrec": ({"embedding_dim": 16, "modalities": ["x", "image"]}, 0.7, False),
    "slmrec": ({"embedding_dim": 16, "modalities": ["x", "image"]}, 0.7, False),
    "smore": ({"embedding_dim": 16, "knn_k": 4, "dropout": 0.1}, 0.7, False),
    "gume": ({"embedding_dim": 16, "knn_k": 4, "modalities": ["x", "image"]}, 0.7, False),
    "soil": (
        {"embedding_dim": 16, "knn_k": 4, "knn_i": 4, "modalities": ["x", "image"]},
        0.7,
        False,
    ),
}


@pytest.mark.parametrize("name", CLASSES)
def test_registered_and_requires(name):
    cls = CLASSES[name]
    assert MODELS[name] is cls
    assert cls.requires(cls.config_class()) == frozenset({"items"})
    if name in PLUG_AND_PLAY:
        refined = cls.config_class(item_graph=RELATED)
        assert cls.requires(refined) == frozenset({"items", "graph"})


@pytest.mark.parametrize("name", TRAINING)
def test_training_lowers_the_loss_beats_popularity_and_checkpoints_round_trip(name, tmp_path):
    kwargs, loss_ratio, exact = TRAINING[name]
    data = clustered_data()
    torch.manual_seed(0)
    model = build_model(name, data, **kwargs)
    cfg = TrainConfig(
        epochs=30,
        patience=30,
        lr=0.01,
        batch_size=64,
        ks=(5, 10),
        monitor="recall@10",
        show_progress=False,
    )
    result = Trainer(model, data, cfg).fit()
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < loss_ratio * losses[0]
    pop = Trainer(build_model("pop", data), data, cfg).fit()
    assert result.test["recall@5"] > pop.test["recall@5"] + 0.2
    path = save_checkpoint(model, tmp_path / f"{name}.pt", data)
    again = load_checkpoint(path, data)
    users = torch.arange(20)
    with torch.no_grad():
        got, want = again.scorer()(users), model.scorer()(users)
    if exact:
        assert torch.equal(got, want)
    else:
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(again.recommend(users, k=5), model.recommend(users, k=5))


@pytest.mark.parametrize("name", CLASSES)
def test_tuning_candidates_build_valid_configs(name):
    from mllmrec_pyg.tuning import CANDIDATES, split_point

    keys = (name, f"{name}-refined") if name in PLUG_AND_PLAY else (name,)
    for key in keys:
        cand = CANDIDATES[key]
        assert cand.model == name
        assert "train.lr" in cand.space
        for point in cand.grid():
            make_config(cand.model, {**cand.fixed, **split_point(point)["model"]})
    if name in PLUG_AND_PLAY:
        assert CANDIDATES[name].needs() == frozenset({"items"})
        assert CANDIDATES[f"{name}-refined"].needs() == frozenset({"items", "graph"})
        assert {"graph.alpha", "graph.k_c"} <= set(CANDIDATES[f"{name}-refined"].space)


def _plain_softmax_loss(q, k, temperature):
    return F.cross_entropy(q @ k.t() / temperature, torch.arange(q.size(0)))


@pytest.mark.parametrize("normalize", [False, True])
def test_in_batch_softmax_equals_the_batch_cross_entropy_with_repeated_ids(normalize):
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(30, 6, generator=g, dtype=torch.double, requires_grad=True)
    keys = torch.randn(20, 6, generator=g, dtype=torch.double, requires_grad=True)
    rows = torch.randint(0, 30, (64,), generator=g)  # many repeats, as in a real batch
    cols = torch.randint(0, 20, (64,), generator=g)
    got = in_batch_softmax(queries, keys, rows, cols, 0.3, normalize=normalize)
    q, k = queries[rows], keys[cols]
    if normalize:
        q, k = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    want = _plain_softmax_loss(q, k, 0.3)
    assert torch.allclose(got, want, rtol=1e-12)
    for a, b in zip(
        torch.autograd.grad(got, [queries, keys]), torch.autograd.grad(want, [queries, keys])
    ):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("with_candidates", [False, True])
def test_info_nce_on_indexed_tables_equals_it_on_gathered_rows(reduce, with_candidates):
    g = torch.Generator().manual_seed(1)
    anchor = torch.randn(25, 5, generator=g, dtype=torch.double, requires_grad=True)
    positive = torch.randn(25, 5, generator=g, dtype=torch.double, requires_grad=True)
    index = torch.randint(0, 25, (40,), generator=g)
    cands = (lambda: positive * 2) if with_candidates else (lambda: None)
    got = info_nce(anchor, positive, 0.2, cands(), reduce, index=index)
    want = info_nce(anchor[index], positive[index], 0.2, cands(), reduce)
    assert torch.allclose(got, want, rtol=1e-12)
    grads = [torch.autograd.grad(x, [anchor, positive]) for x in (got, want)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
