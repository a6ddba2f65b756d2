"""Every registered model on a CUDA device computes what it computes on the CPU.

For each model, built twice, once moved to the GPU, with the same weights:

* the evaluation scores of every user agree;
* the training loss of one batch and its gradients agree, whenever the loss
  is deterministic (two CPU evaluations under different seeds give the same
  value); a stochastic loss (dropout, noise, random edge pruning) draws from
  another generator on the GPU, so there only its finiteness and placement
  are checked;
* a whole :class:`~mllmrec_pyg.train.Trainer` run with ``device="cuda"``
  trains, evaluates, checkpoints and recommends, and the checkpoint loads on
  the CPU with scores equal to the GPU's.

Skipped without CUDA. ``MLLMREC_TEST_DEVICE`` names another device (``cuda:1``,
or ``cpu`` to run the checks' own logic on a machine without a GPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from mllmrec_pyg.checkpoint import load_checkpoint, save_checkpoint
from mllmrec_pyg.data.synthetic import make_scale_data
from mllmrec_pyg.nn.registry import MODELS, build_model
from mllmrec_pyg.train import TrainConfig, Trainer, batch_objective, seed_everything
from mllmrec_pyg.transforms import RefineItemGraph

DEVICE = os.environ.get("MLLMREC_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
)

#: float32 on two devices sums in different orders: relative agreement expected
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def data():
    return RefineItemGraph()(make_scale_data((120, 90, 1500), dim=24, seed=3))


def _batch(data, device, size=256):
    gen = torch.Generator().manual_seed(1)
    pairs = data["user", "interacts", "item"].edge_index
    idx = torch.randperm(pairs.size(1), generator=gen)[:size]
    users, pos = pairs[:, idx]
    neg = torch.randint(0, data["item"].num_nodes, (size,), generator=gen)
    return users.to(device), pos.to(device), neg.to(device)


def _loss(model, batch, seed):
    """The trainer's loss for ``batch``, after the epoch start hook."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    model.train()
    model.on_train_epoch_start(1)
    users, pos, neg = batch
    num_neg = int(getattr(model, "num_negatives", 1))
    if num_neg == 0:
        neg = users.new_empty((users.numel(), 0))
    elif num_neg > 1:
        neg = neg.unsqueeze(1).expand(-1, num_neg)
    return batch_objective(model, users, pos, neg)


def _grads(model):
    return {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


def _scores(model, num_users, device):
    model.eval()
    with torch.no_grad():
        return model.scorer()(torch.arange(num_users, device=device)).float().cpu()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_on_cuda_matches_cpu(name, data):
    seed_everything(0)
    cpu = build_model(name, data)
    seed_everything(0)
    gpu = build_model(name, data)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(DEVICE)
    where = torch.empty(0, device=DEVICE).device  # "cuda" -> cuda:0
    for t in list(gpu.parameters()) + list(gpu.buffers()):
        assert t.device == where, f"{name}: a parameter or buffer stayed on the CPU"
    users = data["user"].num_nodes
    assert torch.allclose(_scores(gpu, users, DEVICE), _scores(cpu, users, "cpu"), RTOL, ATOL)
    if not any(p.requires_grad for p in cpu.parameters()):
        return  # MostPop
    a, b = _loss(cpu, _batch(data, "cpu"), 0), _loss(cpu, _batch(data, "cpu"), 1)
    deterministic = torch.equal(a.detach(), b.detach())
    cpu.zero_grad(set_to_none=True)
    loss_cpu = _loss(cpu, _batch(data, "cpu"), 0)
    loss_cpu.backward()
    loss_gpu = _loss(gpu, _batch(data, DEVICE), 0)
    assert loss_gpu.device == where and torch.isfinite(loss_gpu)
    loss_gpu.backward()
    g_cpu, g_gpu = _grads(cpu), _grads(gpu)
    assert g_gpu.keys() == g_cpu.keys() and g_gpu
    if deterministic:
        assert loss_gpu.item() == pytest.approx(loss_cpu.item(), rel=RTOL)
        for n in g_cpu:
            scale = g_cpu[n].abs().max().item() + 1e-12
            err = (g_gpu[n] - g_cpu[n]).abs().max().item()
            assert err <= 1e-3 * scale + 1e-7, f"{name}: gradient of {n} differs by {err}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trainer_on_cuda(name, data, tmp_path):
    seed_everything(0)
    model = build_model(name, data)
    cfg = TrainConfig(
        epochs=2, batch_size=256, device=DEVICE, show_progress=False, ks=(10, 20),
        checkpoint_dir=str(tmp_path / "ckpt"),
    )  # fmt: skip
    result = Trainer(model, data, cfg).fit()
    assert all(torch.isfinite(torch.tensor(h.get("loss", 0.0))) for h in result.history)
    assert 0.0 <= result.test["recall@20"] <= 1.0
    top = model.recommend([0, 1, 2], k=5)
    assert top.shape == (3, 5) and top.device.type == "cpu"
    seen = data["user", "interacts", "item"].edge_index
    for row, u in zip(top.tolist(), (0, 1, 2)):
        assert not set(row) & set(seen[1, seen[0] == u].tolist())
    path = save_checkpoint(model, tmp_path / f"{name}.pt", data)
    again = load_checkpoint(path, data)  # onto the CPU
    users = data["user"].num_nodes
    assert torch.allclose(_scores(again, users, "cpu"), _scores(model, users, DEVICE), RTOL, ATOL)
