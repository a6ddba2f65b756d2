"""Files written so that a crash never leaves half of one: JSON, JSON lines, CSV, any bytes.

Every writer goes through :func:`atomic_path`: the content is written to a
temporary file beside the target and moved over it with :func:`os.replace`,
so a reader sees either the old file or the new one, never a torn write.
Readers name the file and line at fault when the content is malformed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path``.

    The parent folder is created. On an exception the temporary file is
    removed and ``path`` is left as it was.

    Args:
        path: the target file.
        fsync: flush the temporary file to disk before the move (for files
            that must survive a power loss, not only a killed process).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` and tuples as lists (valid JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON atomically; ``indent=None`` writes one line."""
    return write_text(path, json.dumps(jsonable(obj), indent=indent) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming it and the line in the error when it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def text_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file, line ends kept (as ``open(path, newline="")`` gives
    them), with a leading UTF-8 byte-order mark dropped.

    Raises:
        ValueError: ``path:line: ...`` at the first line that is not UTF-8, naming
            the byte and its column.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}); save the file as UTF-8"
                ) from None


def link_target_elsewhere(path: str | os.PathLike) -> Path | None:
    """Where ``path`` points when it is a symbolic link out of its own folder, else ``None``.

    Readers of such a file do not quote its content in their errors (it may be
    any file on the system), and name the target instead.
    """
    path = Path(path)
    if not path.is_symlink():
        return None
    target = path.resolve()
    return None if target.parent == path.parent.resolve() else target


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line atomically (keys sorted, UTF-8 kept)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    return Path(path)


def read_jsonl_texts(path: str | os.PathLike, id_key: str, n: int) -> list[str]:
    """The ``text`` of every row of a JSON-lines file, indexed by ``row[id_key]`` in ``0..n-1``.

    Raises:
        ValueError: naming ``file:line`` for a malformed row or an id out of
            range, and the missing ids when some have no row.
    """
    path = Path(path)
    texts: list[str | None] = [None] * n
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                idx = int(row[id_key])
                text = row["text"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{path}:{lineno}: bad row ({type(err).__name__}: {err})"
                ) from None
            if not 0 <= idx < n or not isinstance(text, str):
                raise ValueError(f"{path}:{lineno}: {id_key} {idx} outside 0..{n - 1} or bad text")
            texts[idx] = text
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        raise ValueError(f"{path}: no row for {id_key} {missing[:10]} ({len(missing)} missing)")
    return [t for t in texts if t is not None]


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts) as CSV atomically; columns in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return write_text(path, buf.getvalue())


__all__ = [
    "atomic_path",
    "jsonable",
    "link_target_elsewhere",
    "read_json",
    "read_jsonl_texts",
    "text_lines",
    "write_csv",
    "write_json",
    "write_jsonl",
    "write_text",
]
