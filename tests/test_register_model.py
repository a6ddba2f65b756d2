"""A model registered here alone reaches ``train``, ``tune`` and ``experiment compare``.

The package knows nothing of :class:`ToyMF`: the fixture registers it with
:func:`~mllmrec_pyg.nn.registry.register_model` (the decorator every model of
:mod:`mllmrec_pyg.nn` carries) and removes it afterwards, so its search space,
its flag, its candidate variant and its ablation come from the registration only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from conftest import cli_error
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mllmrec_pyg.cli import main
from mllmrec_pyg.commands.train import MODEL_FLAGS
from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER
from mllmrec_pyg.nn.base import RankingModel, ScoreFn, dot_pair_scores, dot_scorer
from mllmrec_pyg.nn.registry import (
    CANDIDATES,
    MODELS,
    Flag,
    hosts,
    register_model,
    unregister_model,
)

DATA = ["--dataset", "synthetic", "--num-users", "60", "--num-items", "40"]
QUICK = ["--epochs", "2", "--patience", "1", "--no-progress"]


@dataclass
class ToyConfig:
    """Matrix factorisation with scaled scores.

    Args:
        width: embedding width.
        scale: factor on every score.
    """

    width: int = 8
    scale: float = 1.0


class ToyMF(RankingModel):
    """:math:`\\hat y_{ui} = s \\langle p_u, q_i \\rangle`, ID embeddings only."""

    config_class = ToyConfig

    def __init__(self, num_users: int, num_items: int, config: ToyConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.config = config or ToyConfig()
        self.user_emb, self.item_emb = self._id_tables(self.config.width)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    @classmethod
    def from_data(cls, data: HeteroData, config: ToyConfig | None = None) -> ToyMF:
        model = cls(int(data[USER].num_nodes), int(data[ITEM].num_nodes), config)
        return model.set_seen(data[INTERACTS].edge_index)

    def _outputs(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight * self.config.scale, self.item_emb.weight

    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        return dot_pair_scores(*self._outputs(), users, pos_items, neg_items)

    def scorer(self) -> ScoreFn:
        return dot_scorer(*(t.detach() for t in self._outputs()))


@pytest.fixture
def toy():
    """``ToyMF`` registered as ``toy``, the same as ``@register_model(...)`` on its class."""
    register_model(
        "toy",
        label="Toy",
        space={"train.lr": (1e-2, 5e-2), "model.scale": (0.5, 1.0)},
        candidates={"toy-wide": ({"width": 16}, {"train.lr": (5e-2,)})},
        flags={"toy_width": Flag("width", "embedding width")},
        ablations={"narrow": ({}, {"width": 4}), "unscaled": ({}, {"scale": 1.0})},
    )(ToyMF)
    yield ToyMF
    unregister_model("toy")
    assert "toy" not in MODELS and "toy-wide" not in CANDIDATES
    assert "toy_width" not in MODEL_FLAGS


def test_the_registration_is_all_the_package_reads(toy):
    assert MODELS["toy"] is toy and toy.name == "toy"
    assert list(CANDIDATES)[-2:] == ["toy", "toy-wide"]
    assert CANDIDATES["toy-wide"].fixed == {"width": 16}
    assert CANDIDATES["toy"].needs() == frozenset()
    assert MODEL_FLAGS["toy_width"] == {"toy": "width"}
    assert "toy" not in hosts()
    with pytest.raises(ValueError, match="registered already"):
        register_model("toy")(toy)
    with pytest.raises(ValueError, match="--toy-depth sets no field of ToyConfig"):
        register_model("toy2", flags={"toy_depth": Flag("depth")})(toy)
    with pytest.raises(ValueError, match="--refined-graph sets no field"):
        register_model("toy2", host=True)(toy)  # a host reads its graph through item_graph
    with pytest.raises(ValueError, match="must be '<train"):
        register_model("toy2", space={"lr": (1e-3,)})(toy)
    assert "toy2" not in MODELS


def test_train_takes_the_model_and_its_flag(toy, tmp_path, capsys):
    out = tmp_path / "toy.json"
    argv = ["train", "--model", "toy", *DATA, *QUICK, "--toy-width", "4", "--json", str(out)]
    assert main(argv) == 0
    assert "toy" in capsys.readouterr().out
    trained = json.loads(out.read_text())
    assert trained["model"] == "toy" and trained["config"]["model"]["width"] == 4
    err = cli_error(capsys, ["train", "--model", "bpr", *DATA, *QUICK, "--toy-width", "4"], 2)
    assert "--toy-width does not apply to --model bpr" in err


def test_tune_searches_the_declared_space(toy, tmp_path):
    out = tmp_path / "tuned"
    argv = ["tune", "toy", "toy-wide", *DATA, *QUICK, "--trials", "3", "--out", str(out)]
    assert main(argv) == 0
    found = json.loads(next(out.glob("*/toy.json")).read_text())
    assert found["search_space"] == {"train.lr": [1e-2, 5e-2], "model.scale": [0.5, 1.0]}
    assert len(found["trials"]) == 3 and found["model"] == "toy"
    wide = json.loads(next(out.glob("*/toy-wide.json")).read_text())
    assert [t["settings"]["model"]["width"] for t in wide["trials"]] == [16]


def test_compare_tunes_tests_and_ablates_it(toy, tmp_path):
    out, cache = tmp_path / "results", tmp_path / "cache"
    argv = ["experiment", "compare", *DATA, *QUICK, "--models", "pop", "toy", "--proposed"]
    argv += ["toy", "--trials", "2", "--seeds", "0", "--ablation-seeds", "0"]
    argv += ["--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    stored = json.loads(next(out.glob("*/compare/results.json")).read_text())
    rows = {r["variant"]: r for r in stored["rows"]}
    # the chosen scale may already be 1.0, which makes "unscaled" the chosen settings
    assert {"pop", "toy", "toy-ablate-narrow"} <= set(rows) <= {*rows, "toy-ablate-unscaled"}
    assert stored["proposed"] == "toy" and stored["findings"]["best_baseline"] == "pop"
    narrow = [r for r in stored["runs"] if r["variant"] == "toy-ablate-narrow"]
    assert [r["config"]["width"] for r in narrow] == [4]
    assert torch.isfinite(torch.tensor(rows["toy"]["test recall@20"]))
    md = tmp_path / "results.md"
    assert main(["experiment", "report", "--out", str(out), "--report-out", str(md)]) == 0
    assert "toy-ablate-narrow" in md.read_text()
