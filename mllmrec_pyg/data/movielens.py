"""MovieLens in the ``ml-latest-small`` layout -> the HeteroData contract.

Every rating is an implicit interaction (whatever its value); the
interactions are 5-core filtered and split per user as in MMRec
(:func:`~mllmrec_pyg.data.split.per_user_split`). Item text is the title,
the genres and the movie's tags, written as
``"<title>. Genres: a, b. Tags: x, y."``.

Tags are applied by users, so a tag is evidence that its user watched the
movie. Tags whose ``(user, movie)`` pair is a held-out (valid or test)
interaction are therefore left out of the item text; tags from training
pairs and from users who never rated the movie are kept. At most
``max_tags`` distinct tags (case-insensitive) are kept per movie, most
frequent first.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import INTERACTS, SchemaError
from mllmrec_pyg.data.split import TRAIN, k_core, per_user_split, remap, to_heterodata
from mllmrec_pyg.io import link_target_elsewhere, text_lines
from mllmrec_pyg.paths import movielens_root

log = logging.getLogger(__name__)


class MovieLensFormatError(SchemaError):
    """A MovieLens CSV file is malformed; the message names file and line."""


def _where(path: Path) -> tuple[str, bool]:
    """How errors name ``path``, and whether they may quote its content (not when it is a
    link out of its folder: it may be any file)."""
    target = link_target_elsewhere(path)
    return (str(path), True) if target is None else (f"{path} (a link to {target})", False)


def _rows(path: Path, columns: tuple[str, ...]):
    """Yield ``(line number, {column: value})`` for each data row of a CSV file (UTF-8, a
    byte-order mark accepted; a byte that is not UTF-8 is named with its line)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected the ml-latest-small layout)")
    lines = text_lines(path)
    try:
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            raise MovieLensFormatError(f"{path}: empty file")
        missing = [c for c in columns if c not in header]
        if missing:
            where, quote = _where(path)
            found = f"header {header}" if quote else "its first line is not a header with them"
            raise MovieLensFormatError(f"{where}:1: missing column(s) {missing}; {found}")
        idx = {c: header.index(c) for c in columns}
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise MovieLensFormatError(
                    f"{path}:{reader.line_num}: {len(row)} field(s), the header has {len(header)}"
                )
            yield reader.line_num, {c: row[j] for c, j in idx.items()}
    except MovieLensFormatError:
        raise
    except ValueError as err:  # text_lines: a byte that is not UTF-8
        raise MovieLensFormatError(str(err)) from None
    finally:
        lines.close()


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        where, quote = _where(path)
        shown = repr(value) if quote else "a value not shown here"
        raise MovieLensFormatError(
            f"{where}:{line}: column {column!r} must be an integer, got {shown}"
        ) from None


def _checked_lines(path: Path):
    try:
        yield from text_lines(path)
    except ValueError as err:
        raise MovieLensFormatError(str(err)) from None


def read_ratings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(userId, movieId, timestamp)`` arrays of ``ratings.csv``."""
    users, items, times = [], [], []
    for line, row in _rows(path, ("userId", "movieId", "timestamp")):
        users.append(_int(row["userId"], path, line, "userId"))
        items.append(_int(row["movieId"], path, line, "movieId"))
        times.append(_int(row["timestamp"], path, line, "timestamp"))
    if not users:
        raise MovieLensFormatError(f"{path}: no ratings")
    return (np.asarray(users, np.int64), np.asarray(items, np.int64), np.asarray(times, np.int64))


def read_movies(path: Path) -> dict[int, tuple[str, list[str]]]:
    """``{movieId: (title, [genre, ...])}`` from ``movies.csv``."""
    out: dict[int, tuple[str, list[str]]] = {}
    for line, row in _rows(path, ("movieId", "title", "genres")):
        genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
        out[_int(row["movieId"], path, line, "movieId")] = (row["title"].strip(), genres)
    return out


def read_tags(path: Path) -> list[tuple[int, int, str]]:
    """``[(userId, movieId, tag), ...]`` from ``tags.csv`` (empty if the file is absent or
    empty: tags are optional)."""
    if not path.is_file() or not any(line.strip() for line in _checked_lines(path)):
        log.info("%s absent or empty: item text without tags", path)
        return []
    out = []
    for line, row in _rows(path, ("userId", "movieId", "tag")):
        tag = " ".join(row["tag"].split())
        if tag:
            out.append(
                (
                    _int(row["userId"], path, line, "userId"),
                    _int(row["movieId"], path, line, "movieId"),
                    tag,
                )
            )
    return out


def movie_text(title: str, genres: list[str], tags: list[str]) -> str:
    """The item text of one movie."""
    parts = [title.rstrip(".") + "."]
    if genres:
        parts.append("Genres: " + ", ".join(genres) + ".")
    if tags:
        parts.append("Tags: " + ", ".join(tags) + ".")
    return " ".join(parts)


def load_movielens(
    root: str | os.PathLike | None = None, core: int = 5, seed: int = 0, max_tags: int = 20
) -> HeteroData:
    """Load ``ml-latest-small`` (or a folder in its layout) into the HeteroData contract.

    Args:
        root: folder with ``ratings.csv``, ``movies.csv`` and optionally
            ``tags.csv``; default :func:`mllmrec_pyg.paths.movielens_root`.
        core: k of the k-core filter.
        seed: seed of the per-user split.
        max_tags: most tags kept in one movie's text.

    Returns:
        HeteroData with ``data["item"].text``, ``data["item"].movie_id``,
        ``data["user"].user_id`` (original ids), training ``edge_index`` +
        ``time``, ``val_edge_index`` and ``test_edge_index``.
    """
    root = Path(root) if root is not None else movielens_root()
    if not root.is_dir():
        raise FileNotFoundError(
            f"MovieLens folder {root} does not exist (set MLLMREC_MOVIELENS or pass root)"
        )
    users, items, times = read_ratings(root / "ratings.csv")
    movies = read_movies(root / "movies.csv")
    unknown = np.setdiff1d(np.unique(items), np.fromiter(movies, dtype=np.int64))
    if unknown.size:
        raise MovieLensFormatError(
            f"{root / 'ratings.csv'}: movieId(s) {unknown[:10].tolist()} are not in movies.csv"
        )
    key = users * (int(items.max()) + 1) + items
    _, first = np.unique(key, return_index=True)
    if first.size != key.size:
        log.warning(
            "%d repeated (userId, movieId) ratings; keeping the first", key.size - first.size
        )
        keep = np.sort(first)
        users, items, times = users[keep], items[keep], times[keep]

    keep = k_core(users, items, core)
    users, items, times = users[keep], items[keep], times[keep]
    if users.size == 0:
        raise MovieLensFormatError(f"{root}: nothing is left after {core}-core filtering")
    user_idx, user_ids = remap(users)
    item_idx, movie_ids = remap(items)
    labels = per_user_split(user_idx, seed=seed)

    held_out = set(zip(users[labels != TRAIN].tolist(), items[labels != TRAIN].tolist()))
    counts: dict[int, Counter] = defaultdict(Counter)
    shown: dict[tuple[int, str], str] = {}
    dropped = 0
    for u, m, tag in read_tags(root / "tags.csv"):
        if (u, m) in held_out:
            dropped += 1
            continue
        low = tag.lower()
        counts[m][low] += 1
        shown.setdefault((m, low), tag)
    if dropped:
        log.info("left out %d tag(s) applied with a held-out interaction", dropped)
    texts = []
    for m in movie_ids.tolist():
        title, genres = movies[m]
        top = sorted(counts[m].items(), key=lambda kv: (-kv[1], kv[0]))[:max_tags]
        texts.append(movie_text(title, genres, [shown[(m, t)] for t, _ in top]))

    data = to_heterodata(
        user_idx, item_idx, labels, user_ids.size, movie_ids.size, timestamps=times, item_text=texts
    )
    data["item"].movie_id = torch.from_numpy(movie_ids)
    data["user"].user_id = torch.from_numpy(user_ids)
    data.name = "movielens"
    store = data[INTERACTS]
    log.info(
        "MovieLens %s: %d users, %d items, %d/%d/%d train/valid/test pairs",
        root,
        user_ids.size,
        movie_ids.size,
        store.edge_index.size(1),
        store.val_edge_index.size(1),
        store.test_edge_index.size(1),
    )
    return data
