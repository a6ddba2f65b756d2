"""The main example runs end to end offline and prints the results table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_train_baby_example_offline(tmp_path):
    out = tmp_path / "results.json"
    # one intra-op thread: the test machines' CPUs are shared
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "train_baby.py"),
            "--num-users",
            "300",
            "--num-items",
            "150",
            "--epochs",
            "3",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
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
