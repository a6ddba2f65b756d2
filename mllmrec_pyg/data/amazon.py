"""Raw Amazon 2014 reviews -> HeteroData, and export to an MMRec folder.

Inputs (McAuley's 2014 release, one category):

* interactions, either ``ratings_<Category>.csv`` (``user,item,rating,timestamp``,
  no header) or ``reviews_<Category>_5.json[.gz]`` (one JSON object per line with
  ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``);
* ``meta_<Category>.json[.gz]``: one Python-literal dict per line, parsed with
  :func:`ast.literal_eval` (never ``eval``);
* optionally a folder of images named by ASIN (``B000123.jpg``, ``.png``...).

Pipeline: read (malformed lines reported as ``file:line`` and skipped or
rejected by ``on_error``), drop duplicate ``(user, item)`` pairs keeping the
latest, iterative k-core, id remapping (sorted raw ids), the MMRec per-user
split (:func:`~mllmrec_pyg.data.split.per_user_split`) and the item text
``D^t`` (:func:`item_text_from_meta`: title, brand, first category path,
description, whitespace runs made single spaces).

MMRec export (:meth:`AmazonDataset.export_mmrec`), every file written atomically:

==========================  ===============================================================
``<name>.inter``            tab-separated, header ``userID itemID rating timestamp x_label``
                            (x_label 0 train, 1 valid, 2 test), rows sorted by user, time
``i_id_mapping.csv``        tab-separated ``asin itemID``
``u_id_mapping.csv``        tab-separated ``user_id userID``
``item_meta.csv``           comma-separated (RFC 4180 quoting) ``itemID asin title brand
                            categories description text image``; ``text`` is ``D^t``,
                            ``categories`` the first path joined by `` > ``, ``image`` the
                            image path or empty
``ingest_report.json``      counts of every filtering step and malformed line
==========================  ===============================================================
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mllmrec_pyg.data.schema import ITEM, USER
from mllmrec_pyg.data.split import TRAIN, k_core, per_user_split, remap, to_heterodata
from mllmrec_pyg.io import atomic_path, write_text

log = logging.getLogger(__name__)

INTER_COLUMNS = ("userID", "itemID", "rating", "timestamp", "x_label")
ITEM_MAP_FILE = "i_id_mapping.csv"
USER_MAP_FILE = "u_id_mapping.csv"
ITEM_META_FILE = "item_meta.csv"
REPORT_FILE = "ingest_report.json"
META_COLUMNS = ("itemID", "asin", "title", "brand", "categories", "description", "text", "image")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
OnError = Literal["skip", "error"]
_ASIN_HINT = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_MAX_REPORTED = 10
_WS = re.compile(r"\s+")


def clean_text(text: Any) -> str:
    """``str(text)`` with every run of whitespace (newlines included) made one space."""
    if text is None:
        return ""
    return _WS.sub(" ", str(text)).strip()


def first_category_path(categories: Any) -> list[str]:
    """Names of the first category path of an Amazon 2014 ``categories`` field.

    The field is a list of paths, each a list of names
    (``[["Baby", "Strollers"], ...]``); a flat list of names is read as one path.
    """
    if not categories:
        return []
    if isinstance(categories, str):
        return [categories]
    first = categories[0]
    if isinstance(first, (list, tuple)):
        return [clean_text(c) for c in first if clean_text(c)]
    return [clean_text(c) for c in categories if isinstance(c, str) and clean_text(c)]


def item_text(
    title: Any = None, brand: Any = None, categories: Any = None, description: Any = None
) -> str:
    """The item text ``D^t_i``: title, brand, first category path, description.

    Missing parts are skipped; newlines become spaces.

    Args:
        title: product title.
        brand: brand name.
        categories: Amazon ``categories`` field (list of paths) or one path.
        description: product description.
    """
    parts = [clean_text(title), clean_text(brand), *first_category_path(categories)]
    parts.append(clean_text(description))
    return " ".join(p for p in parts if p)


def item_text_from_meta(meta: Mapping[str, Any]) -> str:
    """:func:`item_text` from one Amazon 2014 metadata record."""
    return item_text(
        meta.get("title"), meta.get("brand"), meta.get("categories"), meta.get("description")
    )


class MalformedLineError(ValueError):
    """A line of an input file cannot be read; the message names ``file:line``."""


@dataclass
class LineIssues:
    """Malformed lines met while reading one file under the ``skip`` policy.

    Args:
        path: the file.
        count: malformed lines skipped.
        examples: the first few ``"file:line: reason"`` messages.
    """

    path: str
    count: int = 0
    examples: list[str] = field(default_factory=list)


class _LineReader:
    """Numbered, decoded lines of a plain or gzip file with the malformed-line policy."""

    def __init__(self, path: Path, on_error: OnError, what: str) -> None:
        if on_error not in ("skip", "error"):
            raise ValueError(f"on_error must be 'skip' or 'error', got {on_error!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} not found")
        self.path = path
        self.on_error = on_error
        self.issues = LineIssues(str(path))

    def lines(self) -> Iterator[tuple[int, str]]:
        opener = gzip.open if self.path.suffix == ".gz" else open
        size = self.path.stat().st_size
        with opener(self.path, "rb") as raw:
            bar = tqdm(
                total=size if self.path.suffix != ".gz" else None,
                desc=f"reading {self.path.name}",
                unit="B",
                unit_scale=True,
                disable=size < (8 << 20),
                dynamic_ncols=True,
            )
            try:
                for lineno, line in enumerate(raw, start=1):
                    bar.update(len(line))
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as err:
                        self.bad(lineno, f"not UTF-8 ({err.reason} at byte {err.start})")
                        continue
                    text = text.strip()
                    if text:
                        yield lineno, text
            finally:
                bar.close()

    def bad(self, lineno: int, reason: str) -> None:
        msg = f"{self.path}:{lineno}: {reason}"
        if self.on_error == "error":
            raise MalformedLineError(msg)
        self.issues.count += 1
        if len(self.issues.examples) < _MAX_REPORTED:
            self.issues.examples.append(msg)
            log.warning("skipping malformed line %s", msg)

    def summary(self) -> None:
        if self.issues.count:
            log.warning(
                "%s: skipped %d malformed line(s) (on_error='skip')", self.path, self.issues.count
            )


@dataclass
class RawInteractions:
    """Interactions as read, raw ids kept."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    issues: LineIssues


def _read_interactions(path, on_error: OnError, what: str, parse_line) -> RawInteractions:
    """Rows ``(user, item, rating, timestamp)`` from ``parse_line(reader, lineno, text)``
    for every line; it returns ``None`` (after :meth:`_LineReader.bad`) to skip one."""
    reader = _LineReader(Path(path), on_error, what)
    rows = [row for lineno, text in reader.lines() if (row := parse_line(reader, lineno, text))]
    reader.summary()
    users, items, ratings, times = zip(*rows) if rows else ([], [], [], [])
    return RawInteractions(
        users=np.asarray(users, dtype=object),
        items=np.asarray(items, dtype=object),
        ratings=np.asarray(ratings, dtype=np.float64),
        timestamps=np.asarray(times, dtype=np.int64),
        issues=reader.issues,
    )


def read_ratings_csv(path: str | os.PathLike, on_error: OnError = "skip") -> RawInteractions:
    """Read ``ratings_<Category>.csv``: ``user,item,rating,timestamp`` per line, no header.

    Args:
        path: the CSV file (``.gz`` accepted).
        on_error: ``"skip"`` malformed lines (counted, first ones logged) or
            ``"error"`` (raise :class:`MalformedLineError` naming ``file:line``).
    """
    return _read_interactions(path, on_error, "ratings", _ratings_line)


def _ratings_line(reader: _LineReader, lineno: int, text: str):
    fields = next(csv.reader(io.StringIO(text)))
    if len(fields) != 4:
        return reader.bad(
            lineno, f"expected 4 fields (user,item,rating,timestamp), got {len(fields)}"
        )
    user, item, rating, ts = (f.strip() for f in fields)
    if not user or not item:
        return reader.bad(lineno, "empty user or item id")
    try:
        r = float(rating)
        t = int(float(ts))
    except ValueError:
        return reader.bad(lineno, f"rating {rating!r} or timestamp {ts!r} is not a number")
    if not np.isfinite(r):
        return reader.bad(lineno, f"rating {rating!r} is not finite")
    return user, item, r, t


def _parse_record(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)  # Python-literal lines of the 2014 dumps


def read_reviews_json(path: str | os.PathLike, on_error: OnError = "skip") -> RawInteractions:
    """Read ``reviews_<Category>_5.json[.gz]``: one review object per line.

    Uses ``reviewerID``, ``asin``, ``overall`` (rating) and ``unixReviewTime``.
    Lines are JSON; Python-literal lines are accepted through
    :func:`ast.literal_eval`.

    Args:
        path: the reviews file.
        on_error: ``"skip"`` or ``"error"``, see :func:`read_ratings_csv`.
    """
    return _read_interactions(path, on_error, "reviews", _review_line)


def _review_line(reader: _LineReader, lineno: int, text: str):
    try:
        rec = _parse_record(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        return reader.bad(lineno, f"neither JSON nor a Python literal ({type(err).__name__})")
    if not isinstance(rec, dict):
        return reader.bad(lineno, f"expected an object, got {type(rec).__name__}")
    missing = [k for k in ("reviewerID", "asin", "overall", "unixReviewTime") if k not in rec]
    if missing:
        return reader.bad(lineno, f"missing field(s) {', '.join(missing)}")
    try:
        r = float(rec["overall"])
        t = int(rec["unixReviewTime"])
    except (TypeError, ValueError):
        return reader.bad(lineno, "overall or unixReviewTime is not a number")
    user, item = str(rec["reviewerID"]).strip(), str(rec["asin"]).strip()
    if not user or not item:
        return reader.bad(lineno, "empty reviewerID or asin")
    return user, item, r, t


def read_meta(
    path: str | os.PathLike, asins: set[str] | None = None, on_error: OnError = "skip"
) -> tuple[dict[str, dict[str, Any]], LineIssues]:
    """Read ``meta_<Category>.json[.gz]`` with :func:`ast.literal_eval`.

    Args:
        path: the metadata file.
        asins: keep only these items; lines whose ``asin`` is visibly another
            item are not parsed at all (fast on the large categories).
        on_error: ``"skip"`` or ``"error"``, see :func:`read_ratings_csv`.

    Returns:
        ``({asin: record}, issues)``; the first record of a repeated ASIN wins.
    """
    reader = _LineReader(Path(path), on_error, "metadata")
    meta: dict[str, dict[str, Any]] = {}
    repeated = 0
    for lineno, text in reader.lines():
        if asins is not None:
            hint = _ASIN_HINT.search(text)
            if hint is not None and hint.group(1) not in asins:
                continue
        try:
            rec = _parse_record(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            reader.bad(lineno, f"not a Python literal ({type(err).__name__})")
            continue
        if not isinstance(rec, dict):
            reader.bad(lineno, f"expected a dict, got {type(rec).__name__}")
            continue
        asin = rec.get("asin")
        if not isinstance(asin, str) or not asin.strip():
            reader.bad(lineno, "record has no 'asin'")
            continue
        asin = asin.strip()
        if asins is not None and asin not in asins:
            continue
        if asin in meta:
            repeated += 1
            continue
        meta[asin] = rec
    if repeated:
        log.warning("%s: %d repeated ASIN record(s) ignored (first kept)", path, repeated)
    reader.summary()
    return meta, reader.issues


def find_images(folder: str | os.PathLike) -> dict[str, Path]:
    """``{asin: path}`` for image files in ``folder`` named ``<ASIN>.<ext>``."""
    folder = Path(folder).resolve()  # absolute paths stay valid from any working directory
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    rank = {ext: r for r, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file():
            continue
        p = Path(entry.path)
        ext = p.suffix.lower()
        if ext not in rank:
            continue
        if p.stem not in found or rank[ext] < rank[found[p.stem].suffix.lower()]:
            found[p.stem] = p
    return found


def find_category_files(root: str | os.PathLike, category: str) -> tuple[Path, Path | None]:
    """Locate the interactions and metadata files of ``category`` under ``root``.

    Prefers ``reviews_<Category>_5.json[.gz]`` over ``ratings_<Category>.csv``.
    """
    root = Path(root)

    def first(*names: str) -> Path | None:
        return next((root / n for n in names if (root / n).is_file()), None)

    inter = first(
        f"reviews_{category}_5.json.gz",
        f"reviews_{category}_5.json",
        f"ratings_{category}.csv",
        f"ratings_{category}.csv.gz",
    )
    if inter is None:
        raise FileNotFoundError(
            f"no reviews_{category}_5.json[.gz] or ratings_{category}.csv in {root}"
        )
    return inter, first(f"meta_{category}.json.gz", f"meta_{category}.json")


@dataclass
class AmazonConfig:
    """Where the raw files are and how to filter them.

    Args:
        interactions: ``ratings_*.csv`` or ``reviews_*_5.json[.gz]``.
        meta: ``meta_*.json[.gz]`` (optional: items then have empty text).
        images: folder of ``<ASIN>.<ext>`` images (optional).
        k: k-core threshold (5 in the paper).
        seed: seed of the per-user split.
        on_error: malformed-line policy, ``"skip"`` or ``"error"``.
        require_meta: drop items without a metadata record before the k-core.
    """

    interactions: Path
    meta: Path | None = None
    images: Path | None = None
    k: int = 5
    seed: int = 0
    on_error: OnError = "skip"
    require_meta: bool = False

    def __post_init__(self) -> None:
        self.interactions = Path(self.interactions)
        self.meta = Path(self.meta) if self.meta is not None else None
        self.images = Path(self.images) if self.images is not None else None
        if self.on_error not in ("skip", "error"):
            raise ValueError(f"on_error must be 'skip' or 'error', got {self.on_error!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass
class AmazonDataset:
    """A filtered, remapped and split Amazon category.

    Rows are interactions with new ids ``0..U-1`` / ``0..I-1``; ``user_ids[u]``
    and ``item_ids[i]`` are the raw ids (sorted, so the mapping is stable).
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    meta: list[dict[str, Any] | None]
    image_paths: list[Path | None]
    report: dict[str, Any]

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def item_texts(self) -> list[str]:
        """``D^t`` for every item (empty for items without metadata)."""
        return [item_text_from_meta(m) if m else "" for m in self.meta]

    @classmethod
    def build(cls, config: AmazonConfig) -> AmazonDataset:
        """Read, clean, k-core, remap and split as described in the module docstring."""
        name = config.interactions.name
        if name.startswith("ratings_") or name.endswith((".csv", ".csv.gz")):
            raw = read_ratings_csv(config.interactions, config.on_error)
        else:
            raw = read_reviews_json(config.interactions, config.on_error)
        report: dict[str, Any] = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
            "interactions_read": int(raw.users.size),
            "malformed": {raw.issues.path: raw.issues.count},
            "malformed_examples": list(raw.issues.examples),
        }
        users, items, ratings, times = raw.users, raw.items, raw.ratings, raw.timestamps
        if users.size == 0:
            raise ValueError(f"{config.interactions}: no readable interactions")

        # duplicates: keep the latest interaction of each (user, item)
        u_code, u_uniq = remap(users)
        i_code, i_uniq = remap(items)
        pair = u_code * max(1, i_uniq.size) + i_code
        order = np.lexsort((np.arange(pair.size), times, pair))
        last = np.r_[pair[order][1:] != pair[order][:-1], True]
        keep = np.sort(order[last])
        report["duplicates_dropped"] = int(pair.size - keep.size)
        users, items, ratings, times = users[keep], items[keep], ratings[keep], times[keep]

        meta: dict[str, dict[str, Any]] = {}
        if config.meta is not None:
            meta, issues = read_meta(config.meta, set(items.tolist()), config.on_error)
            report["meta_file"] = str(config.meta)
            report["malformed"][issues.path] = issues.count
            report["malformed_examples"] += issues.examples
        no_meta = np.array([i not in meta for i in items.tolist()], dtype=bool)
        if config.require_meta:
            report["interactions_without_meta_dropped"] = int(no_meta.sum())
            users, items, ratings, times = (a[~no_meta] for a in (users, items, ratings, times))

        mask = k_core(users, items, config.k)
        report["k"] = config.k
        report["k_core_dropped"] = int(mask.size - mask.sum())
        users, items, ratings, times = users[mask], items[mask], ratings[mask], times[mask]
        if users.size == 0:
            raise ValueError(f"{config.interactions}: nothing survives the {config.k}-core filter")
        u_new, u_raw = remap(users)
        i_new, i_raw = remap(items)
        labels = per_user_split(u_new, seed=config.seed)
        item_meta = [meta.get(a) for a in i_raw.tolist()]
        images: list[Path | None] = [None] * i_raw.size
        if config.images is not None:
            found = find_images(config.images)
            images = [found.get(a) for a in i_raw.tolist()]
            report["images_found"] = sum(p is not None for p in images)
        report.update(
            users=int(u_raw.size),
            items=int(i_raw.size),
            interactions=int(u_new.size),
            train=int((labels == TRAIN).sum()),
            valid=int((labels == 1).sum()),
            test=int((labels == 2).sum()),
            items_without_meta=sum(m is None for m in item_meta),
        )
        n_bad = sum(report["malformed"].values())
        log.info(
            "Amazon %s: %d users, %d items, %d interactions after %d-core "
            "(%d malformed lines skipped, %d duplicates, %d items without metadata)",
            name,
            report["users"],
            report["items"],
            report["interactions"],
            config.k,
            n_bad,
            report["duplicates_dropped"],
            report["items_without_meta"],
        )
        return cls(
            users=u_new,
            items=i_new,
            ratings=ratings.astype(np.float64),
            timestamps=times.astype(np.int64),
            labels=labels,
            user_ids=[str(x) for x in u_raw.tolist()],
            item_ids=[str(x) for x in i_raw.tolist()],
            meta=item_meta,
            image_paths=images,
            report=report,
        )

    def to_heterodata(self) -> HeteroData:
        """The HeteroData contract, plus ``data["item"].asin``, ``data["user"].raw_id``
        and ``data["item"].image_path`` (one path or ``None`` per item)."""
        data = to_heterodata(
            self.users,
            self.items,
            self.labels,
            self.num_users,
            self.num_items,
            timestamps=self.timestamps,
            item_text=self.item_texts(),
        )
        data[ITEM].asin = list(self.item_ids)
        data[USER].raw_id = list(self.user_ids)
        if any(p is not None for p in self.image_paths):
            data[ITEM].image_path = [str(p) if p is not None else None for p in self.image_paths]
        return data

    def export_mmrec(self, folder: str | os.PathLike, name: str) -> dict[str, Path]:
        """Write the MMRec folder described in the module docstring.

        Args:
            folder: output folder (created).
            name: dataset name; the interactions go to ``<name>.inter``.

        Returns:
            ``{"inter": ..., "item_map": ..., "user_map": ..., "item_meta": ...,
            "report": ...}`` paths.
        """
        if not name or os.sep in name:
            raise ValueError(f"invalid dataset name {name!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        order = np.lexsort((self.timestamps, self.users))
        texts = self.item_texts()
        out = {
            "inter": folder / f"{name}.inter",
            "item_map": folder / ITEM_MAP_FILE,
            "user_map": folder / USER_MAP_FILE,
            "item_meta": folder / ITEM_META_FILE,
            "report": folder / REPORT_FILE,
        }

        def inter_rows():
            yield INTER_COLUMNS
            for r in order.tolist():
                yield (
                    int(self.users[r]),
                    int(self.items[r]),
                    f"{self.ratings[r]:g}",
                    int(self.timestamps[r]),
                    int(self.labels[r]),
                )

        _write_table(out["inter"], inter_rows(), "\t")
        for key, head, ids in (
            ("item_map", ("asin", "itemID"), self.item_ids),
            ("user_map", ("user_id", "userID"), self.user_ids),
        ):
            _write_table(out[key], [head, *((x, i) for i, x in enumerate(ids))], "\t")

        def meta_rows():
            yield META_COLUMNS
            for i, (asin, m) in enumerate(zip(self.item_ids, self.meta)):
                m = m or {}
                img = self.image_paths[i]
                yield (
                    i,
                    asin,
                    clean_text(m.get("title")),
                    clean_text(m.get("brand")),
                    " > ".join(first_category_path(m.get("categories"))),
                    clean_text(m.get("description")),
                    texts[i],
                    str(img) if img is not None else "",
                )

        _write_table(out["item_meta"], meta_rows(), ",")
        write_text(out["report"], json.dumps(self.report, indent=1, sort_keys=True))
        log.info("wrote MMRec folder %s (%s.inter, %d rows)", folder, name, order.size)
        return out

    def summary(self) -> dict[str, Any]:
        """The ingestion report (counts of every step)."""
        return dict(self.report)


def _write_table(path: Path, rows, delimiter: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerows(rows)


def read_item_meta(folder: str | os.PathLike) -> tuple[list[str], list[str | None]]:
    """Item texts ``D^t`` and image paths from an exported ``item_meta.csv``.

    Args:
        folder: an MMRec folder written by :meth:`AmazonDataset.export_mmrec`.

    Returns:
        ``(texts, images)`` indexed by ``itemID``.

    Raises:
        FileNotFoundError: no ``item_meta.csv`` in ``folder``.
        MalformedLineError: a missing column, a bad or out-of-order ``itemID``
            (naming ``file:line``).
    """
    path = Path(folder) / ITEM_META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (written by 'mllmrec prepare-amazon')")
    texts: list[str] = []
    images: list[str | None] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("itemID", "text") if c not in (reader.fieldnames or [])]
        if missing:
            raise MalformedLineError(f"{path}:1: missing column(s) {', '.join(missing)}")
        for row in reader:
            line = reader.line_num
            try:
                item = int(row["itemID"])
            except (TypeError, ValueError):
                raise MalformedLineError(
                    f"{path}:{line}: itemID {row['itemID']!r} is not an integer"
                ) from None
            if item != len(texts):
                raise MalformedLineError(
                    f"{path}:{line}: itemID {item} out of order (expected {len(texts)})"
                )
            texts.append(row["text"] or "")
            images.append(row.get("image") or None)
    return texts, images


def load_amazon(
    root: str | os.PathLike | None = None,
    category: str | None = None,
    *,
    interactions: str | os.PathLike | None = None,
    meta: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    k: int = 5,
    seed: int = 0,
    on_error: OnError = "skip",
    require_meta: bool = False,
) -> HeteroData:
    """Raw Amazon 2014 category -> HeteroData (contract of :mod:`mllmrec_pyg.data.schema`).

    Give either ``root`` + ``category`` (files found by their release names)
    or the file paths. See :class:`AmazonConfig` for the options.

    Example::

        data = load_amazon("raw/amazon2014", "Baby", images="raw/baby_images")
    """
    return build_amazon(
        root,
        category,
        interactions=interactions,
        meta=meta,
        images=images,
        k=k,
        seed=seed,
        on_error=on_error,
        require_meta=require_meta,
    ).to_heterodata()


def build_amazon(
    root: str | os.PathLike | None = None,
    category: str | None = None,
    *,
    interactions: str | os.PathLike | None = None,
    meta: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    k: int = 5,
    seed: int = 0,
    on_error: OnError = "skip",
    require_meta: bool = False,
) -> AmazonDataset:
    """Like :func:`load_amazon` but returns the :class:`AmazonDataset` (for export)."""
    if interactions is None:
        if root is None or category is None:
            raise ValueError("give root and category, or the interactions file")
        interactions, found_meta = find_category_files(root, category)
        meta = meta if meta is not None else found_meta
    return AmazonDataset.build(
        AmazonConfig(interactions, meta, images, k, seed, on_error, require_meta)
    )


__all__ = [
    "clean_text",
    "first_category_path",
    "item_text",
    "item_text_from_meta",
    "AmazonConfig",
    "AmazonDataset",
    "INTER_COLUMNS",
    "ITEM_MAP_FILE",
    "ITEM_META_FILE",
    "MalformedLineError",
    "USER_MAP_FILE",
    "build_amazon",
    "find_category_files",
    "find_images",
    "load_amazon",
    "read_item_meta",
    "read_meta",
    "read_ratings_csv",
    "read_reviews_json",
]
