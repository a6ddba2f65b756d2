"""The reasoning commands end to end, including SIGKILL part-way and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_error

from mllmrec_pyg.cli import build_parser, main
from mllmrec_pyg.commands.common import CommandError
from mllmrec_pyg.commands.reasoning import backend_kwargs
from mllmrec_pyg.data.folder import (
    AUDIT_PREFERENCES_FILE,
    ITEM_TEXTS_FILE,
    PREFERENCES_FILE,
    STORE_FILE,
    load_folder,
)
from mllmrec_pyg.data.schema import INTERACTS
from mllmrec_pyg.reasoning.store import GenerationStore

REPO = Path(__file__).resolve().parents[1]
N_USERS, N_ITEMS, PER_USER = 60, 30, 8


def write_raw(root: Path, images: bool = False) -> None:
    """A small Amazon-style category: 60 users x 8 items over 30 items, with metadata."""
    root.mkdir(parents=True, exist_ok=True)
    colours = ["red", "blue", "green", "yellow", "white"]
    kinds = ["stroller", "bottle", "blanket", "teether", "monitor", "carrier"]
    lines = []
    for u in range(N_USERS):
        for j in range(PER_USER):
            i = (u + j) % N_ITEMS
            lines.append(f"U{u:03d},B{i:03d},{1 + j % 5}.0,{1_400_000_000 + 100 * u + j}")
    (root / "ratings_Baby.csv").write_text("\n".join(lines) + "\nbroken,line\n")
    meta = []
    for i in range(N_ITEMS):
        rec = {
            "asin": f"B{i:03d}",
            "title": f"{colours[i % 5]} {kinds[i % 6]} model {i}",
            "brand": f"Brand{i % 4}",
            "categories": [["Baby", kinds[i % 6].title()]],
            "description": f"A {colours[i % 5]} {kinds[i % 6]} made of cotton.\nWashable.",
        }
        meta.append(repr(rec))
    (root / "meta_Baby.json").write_text("\n".join(meta) + "\n")
    if images:
        from PIL import Image

        img = root / "images"
        img.mkdir(exist_ok=True)
        for i in range(0, N_ITEMS, 3):
            Image.new("RGB", (8, 8), (8 * i, 0, 0)).save(img / f"B{i:03d}.png")


@pytest.fixture()
def folder(tmp_path) -> Path:
    raw = tmp_path / "raw"
    write_raw(raw, images=True)
    out = tmp_path / "baby"
    assert (
        main(
            [
                "prepare-amazon",
                "--root",
                str(raw),
                "--category",
                "Baby",
                "--out",
                str(out),
                "--images",
                str(raw / "images"),
            ]
        )
        == 0
    )
    return out


def test_prepare_amazon_writes_a_loadable_folder(folder, capsys):
    from mllmrec_pyg.data.mmrec import load_mmrec

    assert (folder / "baby.inter").is_file() and (folder / "item_meta.csv").is_file()
    data = load_mmrec(folder)
    assert data["user"].num_nodes > 0 and data[INTERACTS].test_edge_index.size(1) > 0
    report = json.loads((folder / "ingest_report.json").read_text())
    assert sum(report["malformed"].values()) == 1


def test_backend_flags_map_to_the_chosen_backend():
    parser = build_parser()
    args = parser.parse_args(
        [
            "infer-preferences",
            "f",
            "--backend",
            "openai",
            "--concurrency",
            "4",
            "--base-url",
            "http://x/v1",
            "--model",
            "m",
        ]
    )
    assert backend_kwargs(args) == {
        "max_concurrency": 4,
        "base_url": "http://x/v1",
        "model": "m",
        "progress": False,
    }
    args = parser.parse_args(
        [
            "infer-preferences",
            "f",
            "--backend",
            "transformers",
            "--batch-size",
            "2",
            "--quantization",
            "nf4",
        ]
    )
    assert backend_kwargs(args) == {"batch_size": 2, "quantization": "nf4", "progress": False}
    # a temperature above 0 samples with transformers; 0 stays greedy
    args = parser.parse_args(
        ["infer-preferences", "f", "--backend", "transformers", "--temperature", "0.7"]
    )
    assert backend_kwargs(args) == {"temperature": 0.7, "do_sample": True, "progress": False}
    args = parser.parse_args(
        ["infer-preferences", "f", "--backend", "transformers", "--temperature", "0"]
    )
    assert backend_kwargs(args) == {"progress": False}
    args = parser.parse_args(
        ["infer-preferences", "f", "--backend", "openai", "--temperature", "-1"]
    )
    with pytest.raises(CommandError, match="--temperature must be >= 0"):
        backend_kwargs(args)
    args = parser.parse_args(["infer-preferences", "f", "--backend", "none", "--concurrency", "3"])
    with pytest.raises(CommandError, match="--concurrency does not apply to --backend none"):
        backend_kwargs(args)


def test_describe_infer_encode_pipeline(folder, capsys):
    from mllmrec_pyg.data.mmrec import load_mmrec
    from mllmrec_pyg.encode import encode_texts

    assert main(["describe-items", str(folder), "--dataset-name", "Baby"]) == 0
    rows = [json.loads(x) for x in (folder / ITEM_TEXTS_FILE).read_text().splitlines()]
    assert len(rows) == N_ITEMS
    # the offline backend gives no image descriptions: items keep their own text
    assert all(r["image_description"] == "" and r["text"] == r["base_text"] for r in rows)
    with GenerationStore(folder / STORE_FILE) as store:
        assert store.count("item_description") == N_ITEMS // 3  # one per item with an image

    assert main(["infer-preferences", str(folder), "--token-budget", "200"]) == 0
    prefs = [json.loads(x) for x in (folder / PREFERENCES_FILE).read_text().splitlines()]
    assert len(prefs) == N_USERS
    assert all(p["text"].startswith("Recurring: ") for p in prefs)
    # 6 training items of ~35 tokens do not fit 200 tokens: cut, most recent kept, recorded
    assert all(p["meta"]["dropped"] > 0 and p["meta"]["prompt_tokens"] <= 200 for p in prefs)
    assert not (folder / AUDIT_PREFERENCES_FILE).exists()

    assert main(["encode", str(folder)]) == 0
    data = load_mmrec(folder)
    assert data["item"].x.shape == (N_ITEMS, 384) and data["user"].x.shape == (N_USERS, 384)
    ref = encode_texts([prefs[7]["text"]], show_progress=False)
    assert torch.allclose(data["user"].x[7], ref[0], atol=1e-5)
    out = capsys.readouterr().out
    assert "encoded item (30, 384), user (60, 384)" in out


def test_full_history_audit_writes_a_separate_file(folder):
    assert main(["infer-preferences", str(folder), "--full-history"]) == 0
    assert (folder / AUDIT_PREFERENCES_FILE).is_file()
    assert not (folder / PREFERENCES_FILE).exists()
    meta = json.loads((folder / AUDIT_PREFERENCES_FILE).read_text().splitlines()[0])["meta"]
    assert meta["full_history"] is True and meta["history_length"] == PER_USER


WRAPPER = textwrap.dedent(
    """
    import os, sys, time
    from mllmrec_pyg.reasoning.backends import offline

    _generate = offline.OfflineBackend.generate
    _log = open(os.environ["GEN_LOG"], "a")

    def slow_generate(self, requests):
        time.sleep(float(os.environ.get("GEN_DELAY", "0")))  # a model takes its time
        out = _generate(self, requests)
        for r in requests:
            _log.write(r.key + "\\n")
            _log.flush()
        return out

    offline.OfflineBackend.generate = slow_generate
    from mllmrec_pyg.cli import build_parser, main
    sys.exit(main(sys.argv[1:]))
    """
)


def run_wrapped(tmp_path: Path, args: list[str], log: Path, delay: float) -> subprocess.Popen:
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    env = dict(os.environ, GEN_LOG=str(log), GEN_DELAY=str(delay), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def committed_users(db: Path) -> list[str]:
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("SELECT entity FROM generations WHERE task='user_preference'").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()
    return [r[0] for r in rows]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(folder, tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(folder, reference)
    opts = ["--request-batch", "2", "--dataset-name", "Baby"]
    assert main(["infer-preferences", str(reference), *opts]) == 0

    args = ["infer-preferences", str(folder), *opts]
    first_log = tmp_path / "first.log"
    proc = run_wrapped(tmp_path, args, first_log, delay=0.2)
    db = folder / STORE_FILE
    deadline = time.time() + 240
    while len(committed_users(db)) < 10:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the run never got going"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = set(committed_users(db))
    assert 10 <= len(done_at_kill) < N_USERS, "the kill must land part-way"
    assert not (folder / PREFERENCES_FILE).exists()  # outputs appear only when complete

    second_log = tmp_path / "second.log"
    resumed = run_wrapped(tmp_path, args, second_log, delay=0.0)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]

    first = first_log.read_text().split()
    second = second_log.read_text().split()
    assert done_at_kill <= set(first)  # what was committed had been generated ...
    assert not done_at_kill & set(second)  # ... and is never generated again
    assert len(second) == len(set(second)) == N_USERS - len(done_at_kill)
    assert done_at_kill | set(second) == {str(u) for u in range(N_USERS)}
    # in-flight work lost by the kill is at most one batch
    assert len(set(first) - done_at_kill) <= 2

    # the resumed run ends exactly like the uninterrupted one
    def rows(path: Path) -> list[tuple]:
        with GenerationStore(path) as s:
            return [(g.task, g.entity, g.request, g.text, g.meta) for g in s.iter()]

    assert rows(db) == rows(reference / STORE_FILE)
    assert (folder / PREFERENCES_FILE).read_text() == (reference / PREFERENCES_FILE).read_text()
    assert len(rows(db)) == N_USERS


def test_encode_reuses_unchanged_features(folder, monkeypatch):
    assert main(["infer-preferences", str(folder)]) == 0
    assert main(["encode", str(folder)]) == 0
    item_feat = folder / "image_text_feat.npy"
    before = item_feat.stat().st_mtime_ns
    first = np.load(item_feat)
    from mllmrec_pyg import encode

    def fail(*a, **k):
        raise AssertionError("re-encoded unchanged texts")

    monkeypatch.setattr(encode, "encode_texts", fail)
    assert main(["encode", str(folder)]) == 0
    assert item_feat.stat().st_mtime_ns == before
    assert np.array_equal(np.load(item_feat), first)


def test_encode_names_a_bad_preferences_file(folder, capsys):
    bad = folder / "prefs.jsonl"
    bad.write_text('{"userID": 0, "text": "ok"}\nnot json\n')
    err = cli_error(capsys, ["encode", str(folder), "--preferences", str(bad)])
    assert "prefs.jsonl:2: bad row" in err


@pytest.mark.slow
def test_commands_drive_the_transformers_backend_on_tiny_gemma(folder, tiny_gemma_dir):
    """Real 4-bit tiny Gemma 3 on CPU through the commands: Prompt 1 on the images,
    then Prompt 2 over the fused texts, everything in the store."""
    from mllmrec_pyg.reasoning import build_preference_prompts
    from mllmrec_pyg.reasoning.prompts import item_prompt
    from mllmrec_pyg.reasoning.store import request_hash

    model = ["--backend", "transformers", "--model", str(tiny_gemma_dir), "--max-new-tokens", "4"]
    assert main(["describe-items", str(folder), "--dataset-name", "Baby", *model]) == 0
    rows = [json.loads(x) for x in (folder / ITEM_TEXTS_FILE).read_text().splitlines()]
    with_image = [r for r in rows if r["itemID"] % 3 == 0]
    assert all(r["image_description"] for r in with_image)
    assert all(r["text"] == f"{r['base_text']} {r['image_description']}" for r in with_image)
    assert all(r["text"] == r["base_text"] for r in rows if r["itemID"] % 3)

    budget = ["--token-budget", "120", "--batch-size", "8"]
    assert main(["infer-preferences", str(folder), "--dataset-name", "Baby", *model, *budget]) == 0
    data = load_folder(folder)
    assert data["item"].text == [r["text"] for r in rows]  # Prompt 2 sees the fused texts
    expected = {p.user: p.prompt for p in build_preference_prompts(data, token_budget=120)}
    with GenerationStore(folder / STORE_FILE) as store:
        items = list(store.iter("item_description"))
        users = list(store.iter("user_preference"))
    assert len(items) == N_ITEMS // 3 and len(users) == N_USERS
    for g in items + users:
        assert g.fingerprint["backend"] == "transformers"
        assert g.fingerprint["model"] == str(tiny_gemma_dir)
        assert g.fingerprint["quantization"] == "nf4" and g.fingerprint["max_new_tokens"] == 4
    image_of = {str(r["itemID"]): r for r in rows}
    for g in items:
        path = folder.parent / "raw" / "images" / f"B{int(g.entity):03d}.png"
        assert g.text == image_of[g.entity]["image_description"]
        assert g.request == request_hash(item_prompt("Baby"), [path], g.fingerprint)
    for g in users:
        assert g.request == request_hash(expected[int(g.entity)], [], g.fingerprint)


def test_cli_flags_reach_the_backend_settings():
    from mllmrec_pyg.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        [
            "infer-preferences",
            "folder",
            "--backend",
            "transformers",
            "--model",
            "models/smol",
            "--gguf-file",
            "m.gguf",
            "--repetition-penalty",
            "1.3",
            "--no-repeat-ngram-size",
            "3",
            "--temperature",
            "0.7",
            "--seed",
            "5",
        ]
    )
    kwargs = backend_kwargs(args)
    assert kwargs["gguf_file"] == "m.gguf" and kwargs["repetition_penalty"] == 1.3
    assert kwargs["no_repeat_ngram_size"] == 3
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 0.7 and kwargs["seed"] == 5
    off = parser.parse_args(
        ["describe-items", "f", "--backend", "transformers", "--no-repeat-ngram-size", "0"]
    )
    assert backend_kwargs(off)["no_repeat_ngram_size"] == 0  # 0 is a value, not "unset"
    wrong = parser.parse_args(["infer-preferences", "f", "--repetition-penalty", "1.2"])
    with pytest.raises(CommandError, match="--repetition-penalty does not apply to --backend none"):
        backend_kwargs(wrong)
    fetch = parser.parse_args(["fetch-model", "smollm2"])
    assert fetch.name == "smollm2" and fetch.install is False
