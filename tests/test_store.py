"""The SQLite generation store: keys, durability, resume, export."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from mllmrec_pyg.reasoning.backends.base import GenerationRequest
from mllmrec_pyg.reasoning.runner import run_requests
from mllmrec_pyg.reasoning.store import GenerationStore, image_digest, request_hash


class CountingBackend:
    """Deterministic toy backend that records every request it answers."""

    name = "counting"

    def __init__(self, setting: int = 0) -> None:
        self.setting = setting
        self.seen: list[str] = []

    def fingerprint(self):
        return {"model": "counting", "setting": self.setting}

    def generate(self, requests):
        self.seen.extend(r.key for r in requests)
        return [f"{r.prompt[::-1]}|{self.setting}" for r in requests]


def test_request_hash_covers_prompt_images_and_fingerprint(tmp_path):
    a = tmp_path / "a.bin"
    b = tmp_path / "b.bin"
    a.write_bytes(b"image-a")
    b.write_bytes(b"image-b")
    base = request_hash("p", [a], {"m": 1})
    assert base == request_hash("p", [str(a)], {"m": 1})  # path type does not matter
    assert base != request_hash("q", [a], {"m": 1})
    assert base != request_hash("p", [b], {"m": 1})
    assert base != request_hash("p", [a], {"m": 2})
    assert base != request_hash("p", [], {"m": 1})
    c = tmp_path / "c.bin"
    c.write_bytes(b"image-a")  # same bytes, other name: same content hash
    assert base == request_hash("p", [c], {"m": 1})
    with pytest.raises(FileNotFoundError, match="missing.png"):
        image_digest(tmp_path / "missing.png")


def test_pil_image_digest_depends_on_pixels():
    from PIL import Image

    red = Image.new("RGB", (4, 4), (255, 0, 0))
    red2 = Image.new("RGB", (4, 4), (255, 0, 0))
    blue = Image.new("RGB", (4, 4), (0, 0, 255))
    assert image_digest(red) == image_digest(red2) != image_digest(blue)


def test_put_get_first_text_wins_and_persists(tmp_path):
    path = tmp_path / "s" / "gen.sqlite"
    with GenerationStore(path) as store:
        assert store.get("t", 1, "h") is None
        assert store.put("t", 1, "h", "first", {"n": 1}, {"m": "x"})
        assert not store.put("t", "1", "h", "second")
        assert store.get("t", "1", "h") == "first"
        assert store.put("t", 1, "h2", "other key")
        assert store.put("u", 1, "h", "other task")
        assert store.count() == 3 and store.count("t") == 2
        assert store.done("t") == {("1", "h"), ("1", "h2")}
        assert store.tasks() == ["t", "u"]
        with pytest.raises(TypeError, match="t/5"):
            store.put("t", 5, "h", None)  # type: ignore[arg-type]
    # a second connection (another process would do the same) sees the rows
    with GenerationStore(path) as again:
        assert again.get("t", 1, "h") == "first"
        (g,) = [g for g in again.iter("t") if g.request == "h"]
        assert g.meta == {"n": 1} and g.fingerprint == {"m": "x"}
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_not_a_store_is_reported(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="bad.sqlite"):
        GenerationStore(bad)


def test_export_jsonl_and_csv_orders_numeric_ids(tmp_path):
    with GenerationStore(tmp_path / "g.sqlite") as store:
        for e in (10, 2, 1):
            store.put("t", e, "h", f'text, "{e}"\nline', {"e": e})
        assert store.export_jsonl(tmp_path / "out.jsonl", "t") == 3
        assert store.export_csv(tmp_path / "out.csv") == 3
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["entity"] for r in rows] == ["1", "2", "10"]
    assert rows[2]["text"] == 'text, "10"\nline' and rows[2]["meta"] == {"e": 10}
    with open(tmp_path / "out.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["entity"] for r in got] == ["1", "2", "10"]
    assert got[0]["text"] == 'text, "1"\nline' and json.loads(got[0]["meta"]) == {"e": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_run_requests_skips_done_and_rekeys_on_setting_change(tmp_path):
    reqs = [GenerationRequest(key=str(i), prompt=f"prompt {i}") for i in range(7)]
    with GenerationStore(tmp_path / "g.sqlite") as store:
        b = CountingBackend()
        first = run_requests("t", reqs[:4], b, store, batch_size=3, show_progress=False)
        assert b.seen == ["0", "1", "2", "3"]
        b.seen.clear()
        full = run_requests("t", reqs, b, store, batch_size=3, show_progress=False)
        assert b.seen == ["4", "5", "6"]  # only the missing ones
        assert full[:4] == first
        assert full == [f"{r.prompt[::-1]}|0" for r in reqs]
        b2 = CountingBackend(setting=1)  # a changed generation setting: nothing reused
        again = run_requests("t", reqs, b2, store, batch_size=3, show_progress=False)
        assert b2.seen == [str(i) for i in range(7)]
        assert again == [f"{r.prompt[::-1]}|1" for r in reqs]
        assert store.count("t") == 14


class BrokenBackend(CountingBackend):
    def generate(self, requests):
        return ["x"] * (len(requests) - 1)


def test_backend_returning_too_few_texts_is_an_error(tmp_path):
    reqs = [GenerationRequest(key=str(i), prompt="p") for i in range(3)]
    with pytest.raises(RuntimeError, match="returned 2 texts for 3 requests"):
        run_requests("t", reqs, BrokenBackend(), None, batch_size=3, show_progress=False)


WRITER = r"""
import sys, time
from mllmrec_pyg.reasoning.store import GenerationStore
store = GenerationStore(sys.argv[1])
for i in range(100000):
    store.put("t", i, "h", "x" * 50)
    print(i, flush=True)
    time.sleep(0.002)
"""


def test_sigkill_keeps_every_committed_row(tmp_path):
    db = tmp_path / "g.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    acknowledged = -1
    deadline = time.time() + 60
    while acknowledged < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        if line:
            acknowledged = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert acknowledged >= 40
    with GenerationStore(db) as store:
        n = store.count("t")
        # every put that returned before the kill is there, with no gaps
        assert n >= acknowledged + 1
        assert {int(g.entity) for g in store.iter("t")} == set(range(n))


class HalfFailingBackend(CountingBackend):
    """Finishes the first request of each call, then fails the call."""

    def generate(self, requests):
        from mllmrec_pyg.reasoning.backends import BackendError

        self.seen.extend(r.key for r in requests)
        done = {0: f"done {requests[0].key}"}
        raise BackendError("server went away", key=requests[1].key, partial=done)


def test_partial_results_of_a_failed_batch_are_kept(tmp_path):
    reqs = [GenerationRequest(key=str(i), prompt=f"p{i}") for i in range(4)]
    with GenerationStore(tmp_path / "g.sqlite") as store:
        with pytest.raises(RuntimeError, match="server went away"):
            run_requests("t", reqs, HalfFailingBackend(), store, batch_size=2, show_progress=False)
        assert [g.entity for g in store.iter("t")] == ["0"]
        assert store.iter("t").__next__().text == "done 0"
        b = CountingBackend()
        out = run_requests("t", reqs, b, store, batch_size=2, show_progress=False)
        assert b.seen == ["1", "2", "3"]  # the kept text is not generated again
        assert out[0] == "done 0"
