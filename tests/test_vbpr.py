"""VBPR: scores against a dense reference of its equations, the loss, frozen features
(training and checkpoints: test_mm_baselines.py)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import clustered_data

from mllmrec_pyg.data import SchemaError
from mllmrec_pyg.nn import VBPR, VBPRConfig


@pytest.mark.parametrize("bias", [False, True])
def test_scores_match_dense_reference(bias):
    data = clustered_data()
    model = VBPR.from_data(data, VBPRConfig(embedding_dim=6, modalities=("x", "image"), bias=bias))
    if bias:  # give the biases non-zero values
        with torch.no_grad():
            model.item_bias.normal_()
            model.feature_bias.weight.normal_()
    f = torch.cat([data["item"].x, data["item"].image], 1)
    assert f.shape == (32, 19)
    p = model.user_emb.detach()
    gamma_u, theta_u = p[:, :6], p[:, 6:]
    gamma_i = model.item_emb.detach()
    e, c = model.projection.weight.detach(), model.projection.bias.detach()
    want = gamma_u @ gamma_i.t() + theta_u @ (f @ e.t() + c).t()
    if bias:
        want = want + model.item_bias.detach() + (f @ model.feature_bias.weight.detach().t()).t()
    users = torch.arange(48)
    with torch.no_grad():
        got = model.scorer()(users)
        assert torch.allclose(got, want, atol=1e-5)
        pos, neg = model.pair_scores(users, torch.arange(48) % 32, (torch.arange(48) + 5) % 32)
    assert torch.allclose(pos, want[users, users % 32], atol=1e-5)
    assert torch.allclose(neg, want[users, (users + 5) % 32], atol=1e-5)


def test_batch_loss_is_bpr_plus_unsquared_norm_penalty():
    data = clustered_data()
    model = VBPR.from_data(data, VBPRConfig(embedding_dim=4, reg_weight=0.5))
    users, pos, neg = (
        torch.tensor([0, 1, 2, 0]),
        torch.tensor([0, 1, 2, 4]),
        torch.tensor([5, 6, 7, 8]),
    )
    f = data["item"].x
    q = torch.cat([model.item_emb, model.projection(f)], 1)
    u = model.user_emb[users]
    bpr = -torch.log(torch.sigmoid((u * q[pos]).sum(1) - (u * q[neg]).sum(1))).mean()
    penalty = (u.pow(2).sum().sqrt() + q[pos].pow(2).sum().sqrt() + q[neg].pow(2).sum().sqrt()) / 4
    got = model.batch_loss(users, pos, neg)
    assert torch.allclose(got, bpr + 0.5 * penalty, atol=1e-6)
    off = VBPR.from_data(data, VBPRConfig(reg_weight=0.0))
    s_pos, s_neg = off.pair_scores(users, pos, neg)
    assert torch.allclose(off.batch_loss(users, pos, neg), -F.logsigmoid(s_pos - s_neg).mean())


def test_features_are_frozen_and_missing_modality_is_named():
    data = clustered_data()
    model = VBPR.from_data(data)
    assert all(p.data_ptr() != model.features.data_ptr() for p in model.parameters())
    assert "features" not in model.state_dict()
    with pytest.raises(SchemaError, match="audio"):
        VBPR.from_data(data, VBPRConfig(modalities=("audio",)))
    with pytest.raises(ValueError, match="modality"):
        VBPRConfig(modalities=())
