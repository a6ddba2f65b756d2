"""A generation store that loses nothing: one SQLite file, one row per finished text.

Rows are keyed by ``(task, entity, request hash)``, where the hash covers the
prompt, the images' bytes and the backend's fingerprint (model and generation
settings): changing any of them makes a new key, so stale text is never
reused. Every row is committed as soon as it is put, in WAL mode, so a
process killed at any instant (SIGKILL included) leaves every finished
generation on disk and a re-run resumes with only the missing ones.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mllmrec_pyg.io import atomic_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    task        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    request     TEXT NOT NULL,
    text        TEXT NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}',
    fingerprint TEXT NOT NULL DEFAULT '{}',
    created     REAL NOT NULL,
    PRIMARY KEY (task, entity, request)
);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _open_text(path: Path, mode: str, gz: bool):
    """A UTF-8 text file, gzip-compressed when ``gz`` (mtime 0: same bytes for same rows)."""
    if not gz:
        return open(path, mode, encoding="utf-8")
    if mode == "w":
        raw = open(path, "wb")
        zipped = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        text = io.TextIOWrapper(zipped, encoding="utf-8")
        return _ClosingText(text, raw)
    return gzip.open(path, "rt", encoding="utf-8")


class _ClosingText:
    """Closes the text wrapper, then the file under the gzip stream."""

    def __init__(self, text: io.TextIOWrapper, raw: Any) -> None:
        self._text, self._raw = text, raw

    def write(self, s: str) -> int:
        return self._text.write(s)

    def __enter__(self) -> _ClosingText:
        return self

    def __exit__(self, *exc: object) -> None:
        self._text.close()
        self._raw.close()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def image_digest(image: Any) -> str:
    """sha256 of an image: the file's bytes for a path, the pixels for a PIL image."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FileNotFoundError(f"cannot read image {path}: {err}") from err
        return hashlib.sha256(data).hexdigest()
    tobytes = getattr(image, "tobytes", None)
    if tobytes is None:
        raise TypeError(f"unsupported image type {type(image).__name__} (path or PIL image)")
    h = hashlib.sha256()
    h.update(f"{getattr(image, 'mode', '')}:{getattr(image, 'size', '')}:".encode())
    h.update(tobytes())
    return h.hexdigest()


def request_hash(prompt: str, images: Sequence[Any], fingerprint: dict[str, Any]) -> str:
    """sha256 over the prompt, the images' digests and the backend fingerprint."""
    payload = {
        "prompt": prompt,
        "images": [image_digest(im) for im in images],
        "fingerprint": fingerprint,
    }
    return hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Generation:
    """One stored generation.

    Args:
        task: ``"item_description"``, ``"user_preference"`` or any other name.
        entity: the item or user id, as a string.
        request: the request hash (:func:`request_hash`).
        text: the generated text.
        meta: JSON metadata stored with it (e.g. how a history was cut).
        fingerprint: the backend fingerprint it was made with.
        created: UNIX time of the commit.
    """

    task: str
    entity: str
    request: str
    text: str
    meta: dict[str, Any]
    fingerprint: dict[str, Any]
    created: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GenerationStore:
    """SQLite-backed store of finished generations.

    Args:
        path: database file (created with its folder), or ``":memory:"``.
        synchronous: SQLite ``synchronous`` pragma. ``"NORMAL"`` (default)
            with WAL keeps every commit through a process kill; ``"FULL"``
            also survives power loss at the cost of an fsync per row.

    Example::

        with GenerationStore("runs/baby/generations.sqlite") as store:
            if store.get("user_preference", "17", h) is None:
                store.put("user_preference", "17", h, text)
    """

    def __init__(self, path: str | os.PathLike, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM info WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as err:
            raise sqlite3.DatabaseError(
                f"{self.path}: not a usable generation store ({err})"
            ) from err
        if row is None:
            self._conn.execute(
                "INSERT OR IGNORE INTO info(key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: store schema version {row[0]}, this code reads {SCHEMA_VERSION}"
            )

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> GenerationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- reads -----------------------------------------------------------------------
    def get(self, task: str, entity: str | int, request: str) -> str | None:
        """The stored text for this key, or ``None``."""
        row = self._conn.execute(
            "SELECT text FROM generations WHERE task=? AND entity=? AND request=?",
            (task, str(entity), request),
        ).fetchone()
        return None if row is None else row[0]

    def done(self, task: str) -> set[tuple[str, str]]:
        """All ``(entity, request)`` pairs already stored for ``task``."""
        rows = self._conn.execute(
            "SELECT entity, request FROM generations WHERE task=?", (task,)
        ).fetchall()
        return {(e, r) for e, r in rows}

    def count(self, task: str | None = None) -> int:
        """Number of stored generations (for one task, or all)."""
        sql, args = "SELECT COUNT(*) FROM generations", ()
        if task is not None:
            sql, args = sql + " WHERE task=?", (task,)
        return int(self._conn.execute(sql, args).fetchone()[0])

    def tasks(self) -> list[str]:
        """Task names present in the store."""
        return [
            r[0] for r in self._conn.execute("SELECT DISTINCT task FROM generations ORDER BY 1")
        ]

    def iter(self, task: str | None = None) -> Iterator[Generation]:
        """Stored generations ordered by task, then entity (numeric ids numerically)."""
        sql = "SELECT task, entity, request, text, meta, fingerprint, created FROM generations"
        args: tuple = ()
        if task is not None:
            sql += " WHERE task=?"
            args = (task,)
        rows = self._conn.execute(sql, args).fetchall()

        def order(r: tuple) -> tuple:
            ent = r[1]
            return (r[0], 0, int(ent), "", r[2]) if ent.isdigit() else (r[0], 1, 0, ent, r[2])

        for r in sorted(rows, key=order):
            yield Generation(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6])

    # -- writes ----------------------------------------------------------------------
    def put(
        self,
        task: str,
        entity: str | int,
        request: str,
        text: str,
        meta: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
    ) -> bool:
        """Store one finished generation and commit it immediately.

        Returns:
            ``True`` if written, ``False`` if this key was already stored (the
            first text is kept: a finished generation is never overwritten).
        """
        if not isinstance(text, str):
            raise TypeError(f"generation for {task}/{entity} is {type(text).__name__}, not str")
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO generations"
            "(task, entity, request, text, meta, fingerprint, created) VALUES (?,?,?,?,?,?,?)",
            (
                task,
                str(entity),
                request,
                text,
                _canonical(meta or {}),
                _canonical(fingerprint or {}),
                time.time(),
            ),
        )
        if cur.rowcount == 0:
            log.debug("%s/%s already stored; kept the first text", task, entity)
            return False
        return True

    # -- export ----------------------------------------------------------------------
    def export_jsonl(self, path: str | os.PathLike, task: str | None = None) -> int:
        """Write the stored generations as JSON lines (atomically); returns the row count.

        A path ending in ``.gz`` is gzip-compressed (reproducibly: no file
        name or time in the gzip header). :meth:`import_jsonl` reads it back.
        """
        n = 0
        with atomic_path(path) as tmp, _open_text(tmp, "w", gz=str(path).endswith(".gz")) as fh:
            for g in self.iter(task):
                fh.write(json.dumps(g.as_dict(), ensure_ascii=False, sort_keys=True) + "\n")
                n += 1
        return n

    def import_jsonl(self, path: str | os.PathLike) -> tuple[int, int]:
        """Add the rows of a :meth:`export_jsonl` file (``.gz`` or plain) to this store.

        Rows whose key is already stored are kept as they are, so importing is
        idempotent; a re-run of the generation then finds the texts and
        generates nothing.

        Returns:
            ``(added, already_present)``.

        Raises:
            ValueError: a malformed row, naming ``file:line``.
        """
        path = Path(path)
        added = present = 0
        with _open_text(path, "r", gz=path.name.endswith(".gz")) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    args = (row["task"], row["entity"], row["request"], row["text"])
                    meta, fp = row.get("meta") or {}, row.get("fingerprint") or {}
                    if not all(isinstance(a, str) for a in args):
                        raise TypeError("task, entity, request and text must be strings")
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(f"{path}:{lineno}: bad row ({err})") from None
                if self.put(*args, meta=meta, fingerprint=fp):
                    added += 1
                else:
                    present += 1
        return added, present

    def export_csv(self, path: str | os.PathLike, task: str | None = None) -> int:
        """Write the stored generations as CSV (atomically); returns the row count.

        ``meta`` and ``fingerprint`` are JSON strings in their columns.
        """
        cols = ["task", "entity", "request", "text", "meta", "fingerprint", "created"]
        n = 0
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(cols)
            for g in self.iter(task):
                d = g.as_dict()
                d["meta"] = _canonical(d["meta"])
                d["fingerprint"] = _canonical(d["fingerprint"])
                writer.writerow([d[c] for c in cols])
                n += 1
        return n


__all__ = ["Generation", "GenerationStore", "image_digest", "request_hash"]
