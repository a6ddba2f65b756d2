"""The main example runs end to end offline and prints the results table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """``examples/<name>`` with ``args``, offline, one intra-op thread (the test machines'
    CPUs are shared), in ``cwd``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.slow
def test_train_baby_example_offline(tmp_path):
    out = tmp_path / "results.json"
    proc = run_example(
        "train_baby.py",
        *("--num-users", "300", "--num-items", "150", "--epochs", "3"),
        *("--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--no-progress"),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    assert "user text: reasoning stage, offline backend 'none'" in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("model"))
    for col in (
        "valid recall@10",
        "valid recall@20",
        "valid ndcg@10",
        "valid ndcg@20",
        "test recall@10",
        "test recall@20",
        "test ndcg@10",
        "test ndcg@20",
    ):
        assert col in header
    rows = {line.split()[0] for line in stdout.splitlines() if line.strip()}
    assert {"mllmrec", "bpr", "pop"} <= rows
    res = json.loads(out.read_text())
    assert [r["model"] for r in res["results"]] == ["mllmrec", "bpr", "pop"]
    assert res["results"][0]["epochs"] == 3 and res["results"][2]["epochs"] == 0
    # the encoded features were cached for the next run
    cache = tmp_path / "cache" / res["dataset"]
    assert (cache / "item_feat.npy").is_file()
    assert (cache / "user_feat_none_train_history.npy").is_file()


@pytest.mark.slow
def test_rerank_example_chooses_its_weights_on_validation(tmp_path):
    """The re-ranking example trains a model from a tuned file, chooses the two ranking
    weights on validation (the model alone is one grid point, so re-ranked validation can
    only be at least as good) and reads the test split with and without them."""
    tuned = tmp_path / "bpr.json"
    settings = {"model": {}, "train": {"lr": 0.01, "batch_size": 512}, "graph": None}
    tuned.write_text(
        json.dumps(
            {
                "format": "mllmrec-pyg/tuned/1",
                "key": "bpr",
                "model": "bpr",
                "best": {"settings": settings},
            }
        )
    )
    proc = run_example(
        "rerank_baseline.py",
        *("--data-dir", "synthetic", "--tuned", str(tuned), "--epochs", "3"),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bpr seed 0: test R@20 ")
    alone, reranked = (float(x) for x in re.findall(r"(\d\.\d{4})", lines[1]))
    assert reranked >= alone
    assert lines[2].startswith("re-ranked (prior ") and "chosen on valid" in lines[2]
