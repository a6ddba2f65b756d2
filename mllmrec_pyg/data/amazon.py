"""Raw Amazon review data (the 2014, 2018 and 2023 releases) -> HeteroData, and export to
an MMRec folder.

Inputs (one category; each file gzipped or not, told apart by its first bytes):

======================  ===================================================================
release                 files and fields read
======================  ===================================================================
2014 (McAuley)          ``reviews_<C>_5.json`` (``reviewerID asin overall unixReviewTime``)
                        or ``ratings_<C>.csv`` (``user,item,rating,timestamp``, no header);
                        ``meta_<C>.json``: Python-literal dicts (:func:`ast.literal_eval`,
                        never ``eval``), ``title brand categories`` (a list of paths)
                        ``description`` (a string)
2018 (Ni et al.)        ``<C>_5.json`` / ``<C>.json`` (the same review fields) or
                        ``<C>.csv`` (``item,user,rating,timestamp``, no header);
                        ``meta_<C>.json``: JSON, ``title brand category`` (one path)
                        ``feature`` (a list) ``description`` (a list)
2023 (Hou et al.)       ``<C>.jsonl`` (``user_id parent_asin rating timestamp``, ms) or
                        ``<C>.csv`` with that header; ``meta_<C>.jsonl``: ``parent_asin
                        title store categories features details description``
======================  ===================================================================

The reviews' release is read from the first record's fields; items are ``asin``
(2014, 2018) or ``parent_asin`` (2023); times are seconds.

Pipeline: read (malformed lines reported as ``file:line`` and skipped or
rejected by ``on_error``; a truncated gzip file is always an error), drop duplicate
``(user, item)`` pairs keeping the latest, iterative k-core, id remapping (sorted raw
ids), the MMRec per-user split (:func:`~mllmrec_pyg.data.split.per_user_split`) and
the item text ``D^t`` (:func:`item_text`: title, brand, first category path, features,
details, description, HTML and whitespace runs made single spaces, cut to
:data:`ITEM_TEXT_WORDS` words).

MMRec export (:meth:`AmazonDataset.export_mmrec`), every file written atomically:

==========================  ===============================================================
``<name>.inter``            tab-separated, header ``userID itemID rating timestamp x_label``
                            (x_label 0 train, 1 valid, 2 test), rows sorted by user, time
``i_id_mapping.csv``        tab-separated ``asin itemID``
``u_id_mapping.csv``        tab-separated ``user_id userID``
``item_meta.csv``           comma-separated (RFC 4180 quoting) ``itemID asin title brand
                            categories features description text image``; ``text`` is
                            ``D^t``, ``categories`` the first path joined by `` > ``,
                            ``features`` joined by `` | ``, ``image`` the image path or empty
``ingest_report.json``      counts of every filtering step and malformed line, the release,
                            and the files written (last: it marks the folder complete)
==========================  ===============================================================
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import logging
import os
import re
import zlib
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
META_COLUMNS = (
    "itemID",
    "asin",
    "title",
    "brand",
    "categories",
    "features",
    "description",
    "text",
    "image",
)
#: present while ``prepare-amazon`` writes a folder (removed last)
INCOMPLETE_FILE = ".prepare-amazon-incomplete"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
OnError = Literal["skip", "error"]
_ASIN_HINT = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_PARENT_HINT = re.compile(r"""['"]parent_asin['"]\s*:\s*['"]([^'"]+)['"]""")
_MAX_REPORTED = 10
_WS = re.compile(r"\s+")


#: Amazon releases :func:`build_amazon` reads (detected from the files; see the module docstring)
RELEASES = ("2014", "2018", "2023")
#: words kept of an item's text ``D^t``: MiniLM reads at most 256 word pieces, and product
#: text averages about 1.5 word pieces a word (Amazon Scientific), so about 160 words fit
ITEM_TEXT_WORDS = 160
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,1000}>")


def clean_text(text: Any) -> str:
    """``text`` as one line: lists joined by spaces, HTML tags and entities removed, every
    run of whitespace (newlines included) made one space."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple)):
        return " ".join(t for t in (clean_text(x) for x in text) if t)
    text = str(text)
    if "<" in text or "&" in text:
        text = html.unescape(_TAG.sub(" ", text))
    return _WS.sub(" ", text).strip()


def first_category_path(categories: Any) -> list[str]:
    """Names of an item's first category path.

    The 2014 ``categories`` field is a list of paths, each a list of names
    (``[["Baby", "Strollers"], ...]``); the 2018 ``category`` and 2023
    ``categories`` fields are one flat path, read as such.
    """
    if not categories:
        return []
    if isinstance(categories, str):
        return [clean_text(categories)] if clean_text(categories) else []
    if not isinstance(categories, (list, tuple)):
        return []
    first = categories[0]
    if isinstance(first, (list, tuple)):
        return [clean_text(c) for c in first if isinstance(c, str) and clean_text(c)]
    return [clean_text(c) for c in categories if isinstance(c, str) and clean_text(c)]


def _limit_words(text: str, max_words: int | None) -> str:
    if max_words is None:
        return text
    words = text.split(" ")
    return text if len(words) <= max_words else " ".join(words[:max_words])


def item_text(
    title: Any = None,
    brand: Any = None,
    categories: Any = None,
    description: Any = None,
    features: Any = None,
    details: Any = None,
    max_words: int | None = ITEM_TEXT_WORDS,
) -> str:
    """The item text ``D^t_i``: title, brand, first category path, features, details,
    description, joined by spaces and cut to ``max_words`` words.

    Missing parts are skipped; HTML and newlines become spaces. The order puts the short,
    dense fields first, so that the cut falls in the (long) description.

    Args:
        title: product title.
        brand: brand name (2023: the ``store``).
        categories: a ``categories``/``category`` field (list of paths, or one path).
        description: product description (a string or a list of paragraphs).
        features: bullet points (2018 ``feature``, 2023 ``features``).
        details: ``{name: value}`` facts (2023 ``details``), written ``name: value``.
        max_words: words kept (``None``: all).
    """
    facts = []
    if isinstance(details, Mapping):
        for key, value in details.items():
            k, v = clean_text(key).rstrip(":").strip(), clean_text(value)
            if k and v and k.lower() not in ("brand", "asin"):
                facts.append(f"{k}: {v}")
    parts = [clean_text(title), clean_text(brand), *first_category_path(categories)]
    parts += [clean_text(features), *facts, clean_text(description)]
    return _limit_words(" ".join(p for p in parts if p), max_words)


def meta_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one metadata record of any release, under one set of names:
    ``title``, ``brand``, ``categories`` (the first path), ``features``, ``details``,
    ``description``."""
    details = meta.get("details") if isinstance(meta.get("details"), Mapping) else {}
    brand = meta.get("brand") or meta.get("store") or details.get("Brand") or ""
    categories = meta.get("categories") if "categories" in meta else meta.get("category")
    path = first_category_path(categories)
    if not path and meta.get("main_category"):
        path = first_category_path(meta.get("main_category"))
    features = meta.get("features") if "features" in meta else meta.get("feature")
    return {
        "title": clean_text(meta.get("title")),
        "brand": clean_text(brand),
        "categories": path,
        "features": [clean_text(f) for f in features or () if clean_text(f)]
        if isinstance(features, (list, tuple))
        else ([clean_text(features)] if clean_text(features) else []),
        "details": details,
        "description": clean_text(meta.get("description")),
    }


def item_text_from_meta(meta: Mapping[str, Any], max_words: int | None = ITEM_TEXT_WORDS) -> str:
    """:func:`item_text` from one metadata record of the 2014, 2018 or 2023 release."""
    f = meta_fields(meta)
    return item_text(
        f["title"],
        f["brand"],
        f["categories"],
        f["description"],
        f["features"],
        f["details"],
        max_words,
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
        """``(line number, text)`` of every non-blank line; a leading UTF-8 BOM is dropped.

        Raises:
            MalformedLineError: the file is gzip data that ends early (a truncated
                download) or is not valid gzip data; this is never skipped.
        """
        with open(self.path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"  # detected from the bytes, not the name
        size = self.path.stat().st_size
        lineno = 0
        with (gzip.open if gzipped else open)(self.path, "rb") as raw:
            bar = tqdm(
                total=size if not gzipped else None,
                desc=f"reading {self.path.name}",
                unit="B",
                unit_scale=True,
                disable=size < (8 << 20),
                dynamic_ncols=True,
            )
            try:
                for lineno, line in enumerate(raw, start=1):
                    bar.update(len(line))
                    if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                        line = line[3:]
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as err:
                        self.bad(lineno, f"not UTF-8 ({err.reason} at byte {err.start})")
                        continue
                    text = text.strip()
                    if text:
                        yield lineno, text
            except (EOFError, gzip.BadGzipFile, zlib.error) as err:
                raise MalformedLineError(
                    f"{self.path}:{lineno + 1}: the gzip data ends early or is damaged "
                    f"({type(err).__name__}); the file is incomplete, download it again"
                ) from None
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
    """Interactions as read, raw ids kept; ``release`` is the layout the file was read as."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    issues: LineIssues
    release: str = ""


def _read_interactions(path, on_error: OnError, what: str, parser) -> RawInteractions:
    """Rows ``(user, item, rating, timestamp)`` from ``parser(reader, lineno, text)`` for
    every line; it returns ``None`` (after :meth:`_LineReader.bad`) to skip one, and its
    ``release`` attribute names the layout it detected."""
    reader = _LineReader(Path(path), on_error, what)
    rows = [row for lineno, text in reader.lines() if (row := parser(reader, lineno, text))]
    reader.summary()
    users, items, ratings, times = zip(*rows) if rows else ([], [], [], [])
    return RawInteractions(
        users=np.asarray(users, dtype=object),
        items=np.asarray(items, dtype=object),
        ratings=np.asarray(ratings, dtype=np.float64),
        timestamps=np.asarray(times, dtype=np.int64),
        issues=reader.issues,
        release=parser.release,
    )


#: the header names of a ratings CSV's columns (2023: ``user_id,parent_asin,rating,timestamp``)
_CSV_NAMES = {
    "user": ("user_id", "reviewerid", "user"),
    "item": ("parent_asin", "asin", "item_id", "item"),
    "rating": ("rating", "overall"),
    "timestamp": ("timestamp", "unixreviewtime", "time"),
}


def _number(value: Any, what: str, integer: bool = False) -> float | int:
    """A finite number from a field (``bool`` and non-finite values refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not np.isfinite(x):
        raise ValueError(f"{what} {value!r} is not finite")
    if integer:
        if x != int(x) or abs(x) >= 2**62:
            raise ValueError(f"{what} {value!r} is not an integer time")
        return int(x)
    return x


class _CsvParser:
    """Lines of a ratings-only CSV. A header line names the columns (the 2023 release:
    ``user_id,parent_asin,rating,timestamp``, times in milliseconds); without one the
    column order comes from the file name: ``ratings_<Category>.csv`` (2014) is
    ``user,item,rating,timestamp``, ``<Category>.csv`` (2018) ``item,user,rating,timestamp``."""

    def __init__(self, path: Path, release: str | None) -> None:
        self.release = release or ("2014" if path.name.startswith("ratings_") else "2018")
        self.order = ("item", "user") if self.release == "2018" else ("user", "item")
        self.cols: dict[str, int] | None = None
        self.header: list[str] | None = None
        self.width: int | None = None
        self.first = True

    def __call__(self, reader: _LineReader, lineno: int, text: str):
        fields = [f.strip() for f in next(csv.reader(io.StringIO(text)))]
        if self.first:
            self.first = False
            names = [f.lower() for f in fields]
            found = {
                k: next((names.index(n) for n in v if n in names), None)
                for k, v in _CSV_NAMES.items()
            }
            if all(i is not None for i in found.values()):
                self.cols, self.header, self.width = found, fields, len(fields)  # a header
                if "user_id" in names or "parent_asin" in names:
                    self.release = "2023"
                return None
        if len(fields) != (self.width or 4):
            return reader.bad(
                lineno,
                f"expected {self.width or 4} fields "
                f"({','.join(self.header or (*self.order, 'rating', 'timestamp'))}), "
                f"got {len(fields)}",
            )
        if self.cols is not None:
            c = self.cols
            user, item, rating, ts = (fields[c[k]] for k in ("user", "item", "rating", "timestamp"))
        else:
            first, second, rating, ts = fields
            user, item = (first, second) if self.order[0] == "user" else (second, first)
        if not user or not item:
            return reader.bad(lineno, "empty user or item id")
        try:
            r = _number(rating, "rating")
            t = _number(ts, "timestamp")
        except ValueError as err:
            return reader.bad(lineno, str(err))
        return user, item, r, _seconds(t, self.release)


def _seconds(t: float, release: str) -> int:
    """A review time in seconds (the 2023 release counts milliseconds)."""
    return int(t) // 1000 if release == "2023" else int(t)


def read_ratings_csv(
    path: str | os.PathLike, on_error: OnError = "skip", release: str | None = None
) -> RawInteractions:
    """Read a ratings-only CSV of any release (:class:`_CsvParser` tells the layouts apart).

    Args:
        path: the CSV file (gzipped or not).
        on_error: ``"skip"`` malformed lines (counted, first ones logged) or
            ``"error"`` (raise :class:`MalformedLineError` naming ``file:line``).
        release: ``"2014"``, ``"2018"`` or ``"2023"`` to set the layout of a file
            without a header (default: from the file name).
    """
    return _read_interactions(path, on_error, "ratings", _CsvParser(Path(path), release))


def _parse_record(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)  # Python-literal lines of the 2014 dumps


#: review fields of each release: user, item, rating, time (2023: ``parent_asin`` falls back
#: to ``asin``; times in milliseconds)
_REVIEW_FIELDS = {
    "2014": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "2023": ("user_id", "parent_asin", "rating", "timestamp"),
}


class _ReviewParser:
    """Lines of a reviews file: JSON objects with ``reviewerID``, ``asin``, ``overall``,
    ``unixReviewTime`` (2014 and 2018) or ``user_id``, ``parent_asin``, ``rating``,
    ``timestamp`` in milliseconds (2023), detected from the first record that has either
    set; every later record must have the same fields."""

    def __init__(self, release: str | None) -> None:
        self.release = release or ""

    def _fields(self, rec: Mapping[str, Any]) -> tuple[str, ...] | None:
        if not self.release:
            if "user_id" in rec and ("parent_asin" in rec or "asin" in rec):
                self.release = "2023"
            elif "reviewerID" in rec:
                self.release = "2014"  # or 2018: the same review fields
            else:
                return None
        return _REVIEW_FIELDS["2023" if self.release == "2023" else "2014"]

    def __call__(self, reader: _LineReader, lineno: int, text: str):
        try:
            rec = _parse_record(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            return reader.bad(lineno, f"neither JSON nor a Python literal ({type(err).__name__})")
        if not isinstance(rec, dict):
            return reader.bad(lineno, f"expected an object, got {type(rec).__name__}")
        names = self._fields(rec)
        if names is None:
            return reader.bad(lineno, "no reviewerID (2014/2018) or user_id (2023) field")
        user_f, item_f, rating_f, time_f = names
        if item_f == "parent_asin" and "parent_asin" not in rec:
            item_f = "asin"
        missing = [k for k in (user_f, item_f, rating_f, time_f) if k not in rec]
        if missing:
            return reader.bad(lineno, f"missing field(s) {', '.join(missing)}")
        for f in (user_f, item_f):
            if not isinstance(rec[f], str):
                return reader.bad(
                    lineno, f"{f} is a {type(rec[f]).__name__} ({rec[f]!r:.40}), not a string id"
                )
        try:
            r = _number(rec[rating_f], rating_f)
            t = _number(rec[time_f], time_f, integer=True)
        except ValueError as err:
            return reader.bad(lineno, str(err))
        user, item = rec[user_f].strip(), rec[item_f].strip()
        if not user or not item:
            return reader.bad(lineno, f"empty {user_f} or {item_f}")
        return user, item, r, _seconds(t, self.release)


def read_reviews_json(
    path: str | os.PathLike, on_error: OnError = "skip", release: str | None = None
) -> RawInteractions:
    """Read a reviews file of any release: one review object per line (JSON; the 2014
    dumps' Python-literal lines are accepted through :func:`ast.literal_eval`).

    Args:
        path: the reviews file (gzipped or not).
        on_error: ``"skip"`` or ``"error"``, see :func:`read_ratings_csv`.
        release: force the layout (default: detected from the first record).
    """
    return _read_interactions(path, on_error, "reviews", _ReviewParser(release))


def _meta_id(rec: Mapping[str, Any]) -> Any:
    """A metadata record's item id: ``parent_asin`` (2023) or ``asin`` (2014, 2018)."""
    return rec["parent_asin"] if "parent_asin" in rec else rec.get("asin")


def read_meta(
    path: str | os.PathLike, asins: set[str] | None = None, on_error: OnError = "skip"
) -> tuple[dict[str, dict[str, Any]], LineIssues]:
    """Read a metadata file of any release: ``meta_<Category>.json[.gz]`` (2014:
    Python-literal lines, parsed with :func:`ast.literal_eval`, never ``eval``; 2018:
    JSON lines) or ``meta_<Category>.jsonl[.gz]`` (2023: JSON lines keyed by ``parent_asin``).

    Args:
        path: the metadata file (gzipped or not).
        asins: keep only these items; lines whose id is visibly another
            item are not parsed at all (fast on the large categories).
        on_error: ``"skip"`` or ``"error"``, see :func:`read_ratings_csv`.

    Returns:
        ``({item id: record}, issues)``; the first record of a repeated id wins.
    """
    reader = _LineReader(Path(path), on_error, "metadata")
    meta: dict[str, dict[str, Any]] = {}
    repeated = 0
    for lineno, text in reader.lines():
        if asins is not None:
            hint = _PARENT_HINT.search(text) or _ASIN_HINT.search(text)
            if hint is not None and hint.group(1) not in asins:
                continue
        try:
            rec = _parse_record(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            reader.bad(lineno, f"neither JSON nor a Python literal ({type(err).__name__})")
            continue
        if not isinstance(rec, dict):
            reader.bad(lineno, f"expected an object, got {type(rec).__name__}")
            continue
        asin = _meta_id(rec)
        if not isinstance(asin, str) or not asin.strip():
            reader.bad(lineno, "record has no 'asin' (or 'parent_asin') string")
            continue
        asin = asin.strip()
        if asins is not None and asin not in asins:
            continue
        if asin in meta:
            repeated += 1
            continue
        meta[asin] = rec
    if repeated:
        log.warning("%s: %d repeated item record(s) ignored (first kept)", path, repeated)
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


#: interaction files looked for, in this order: the 5-core reviews (2014, 2018), all reviews
#: (2018 ``<Category>.json``, 2023 ``<Category>.jsonl``), then ratings-only CSVs
_INTERACTION_NAMES = (
    "reviews_{c}_5.json",
    "{c}_5.json",
    "{c}.jsonl",
    "{c}.json",
    "ratings_{c}.csv",
    "{c}.csv",
)
_META_NAMES = ("meta_{c}.json", "meta_{c}.jsonl")


def find_category_files(root: str | os.PathLike, category: str) -> tuple[Path, Path | None]:
    """Locate the interactions and metadata files of ``category`` under ``root``.

    Looks for, in this order, each also gzipped (``.gz``): ``reviews_<C>_5.json``
    (2014), ``<C>_5.json`` (2018 5-core), ``<C>.jsonl`` (2023), ``<C>.json`` (2018),
    ``ratings_<C>.csv`` (2014), ``<C>.csv`` (2018; 2023 with a header); and
    ``meta_<C>.json`` (2014, 2018) or ``meta_<C>.jsonl`` (2023).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a folder")

    def first(names: tuple[str, ...]) -> Path | None:
        for name in names:
            for suffix in (".gz", ""):
                path = root / (name.format(c=category) + suffix)
                if path.is_file():
                    return path
        return None

    inter = first(_INTERACTION_NAMES)
    if inter is None:
        tried = ", ".join(n.format(c=category) + "[.gz]" for n in _INTERACTION_NAMES)
        raise FileNotFoundError(f"no interactions file for {category!r} in {root} (tried {tried})")
    return inter, first(_META_NAMES)


def read_interactions(
    path: str | os.PathLike, on_error: OnError = "skip", release: str | None = None
) -> RawInteractions:
    """A reviews (JSON lines) or ratings (CSV) file of any release, told apart by its
    content: a first non-blank character ``{`` means JSON lines."""
    path = Path(path)
    reader = _LineReader(path, "skip", "interactions")
    head = next((text for _, text in reader.lines()), "")
    if head.startswith("{"):
        return read_reviews_json(path, on_error, release)
    return read_ratings_csv(path, on_error, release)


def _release_of(reviews: str, path: Path, meta: Mapping[str, Mapping[str, Any]]) -> str:
    """The release a category's files come from: the reviews' fields tell 2023 apart; the
    file name or the metadata's fields tell 2018 (``category``, ``main_cat``) from 2014
    (``categories``)."""
    if reviews != "2014":
        return reviews
    if not path.name.startswith(("reviews_", "ratings_")):
        return "2018"
    first = next(iter(meta.values()), {})
    return "2018" if "main_cat" in first or "category" in first else "2014"


@dataclass
class AmazonConfig:
    """Where the raw files are and how to filter them.

    Args:
        interactions: a reviews (JSON lines) or ratings (CSV) file of any release.
        meta: the metadata file (optional: items then have empty text).
        images: folder of ``<ASIN>.<ext>`` images (optional).
        k: k-core threshold (5 in the paper).
        seed: seed of the per-user split.
        on_error: malformed-line policy, ``"skip"`` or ``"error"``.
        require_meta: drop items without a metadata record before the k-core.
        release: ``"2014"``, ``"2018"`` or ``"2023"`` to force the interaction file's
            layout (``None``: detected from the file).
        max_words: words kept of each item text (:func:`item_text`; ``None``: all).
    """

    interactions: Path
    meta: Path | None = None
    images: Path | None = None
    k: int = 5
    seed: int = 0
    on_error: OnError = "skip"
    require_meta: bool = False
    release: str | None = None
    max_words: int | None = ITEM_TEXT_WORDS

    def __post_init__(self) -> None:
        self.interactions = Path(self.interactions)
        self.meta = Path(self.meta) if self.meta is not None else None
        self.images = Path(self.images) if self.images is not None else None
        if self.on_error not in ("skip", "error"):
            raise ValueError(f"on_error must be 'skip' or 'error', got {self.on_error!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.release is not None and self.release not in RELEASES:
            raise ValueError(f"release must be one of {RELEASES}, got {self.release!r}")
        if self.max_words is not None and self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")


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
        words = self.report.get("config", {}).get("max_words", ITEM_TEXT_WORDS)
        return [item_text_from_meta(m, words) if m else "" for m in self.meta]

    @classmethod
    def build(cls, config: AmazonConfig) -> AmazonDataset:
        """Read, clean, k-core, remap and split as described in the module docstring."""
        name = config.interactions.name
        raw = read_interactions(config.interactions, config.on_error, config.release)
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
        report["release"] = _release_of(raw.release, config.interactions, meta)
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

        The folder holds :data:`INCOMPLETE_FILE` while it is written; ``ingest_report.json``
        comes last, listing every file written, and then the marker goes. A folder
        killed half-way keeps the marker, which :func:`check_complete` refuses.

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
        _remove_stale_temporaries(folder)
        marker = folder / INCOMPLETE_FILE
        write_text(marker, f"prepare-amazon (pid {os.getpid()}) is writing this folder\n")
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
                f = meta_fields(m or {})
                img = self.image_paths[i]
                yield (
                    i,
                    asin,
                    f["title"],
                    f["brand"],
                    " > ".join(f["categories"]),
                    " | ".join(f["features"]),
                    f["description"],
                    texts[i],
                    str(img) if img is not None else "",
                )

        _write_table(out["item_meta"], meta_rows(), ",")
        files = {p.name: p.stat().st_size for k, p in out.items() if k != "report"}
        report = {**self.report, "files": files}
        write_text(out["report"], json.dumps(report, indent=1, sort_keys=True))
        marker.unlink()
        log.info("wrote MMRec folder %s (%s.inter, %d rows)", folder, name, order.size)
        return out

    def summary(self) -> dict[str, Any]:
        """The ingestion report (counts of every step)."""
        return dict(self.report)


def _write_table(path: Path, rows, delimiter: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerows(rows)


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove ``.<name>.<pid>.tmp`` files (:func:`~mllmrec_pyg.io.atomic_path`) whose
    writer is gone: left behind when a run was killed."""
    for tmp in folder.glob(".*.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted run", tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_complete(folder: str | os.PathLike) -> None:
    """Refuse a folder ``prepare-amazon`` did not finish writing.

    Raises:
        ValueError: the folder holds :data:`INCOMPLETE_FILE`, or a file its
            ``ingest_report.json`` lists is missing (one line naming it).
    """
    folder = Path(folder)
    if (folder / INCOMPLETE_FILE).exists():
        raise ValueError(
            f"{folder}: prepare-amazon did not finish writing this folder "
            f"({INCOMPLETE_FILE} is still there); run prepare-amazon again"
        )
    report = folder / REPORT_FILE
    if not report.is_file():
        return
    try:
        files = json.loads(report.read_text(encoding="utf-8")).get("files") or {}
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise ValueError(
            f"{report}: not a readable ingest report; run prepare-amazon again"
        ) from None
    missing = sorted(n for n in files if not (folder / n).is_file())
    if missing:
        raise ValueError(
            f"{folder}: {', '.join(missing)} missing (listed in {REPORT_FILE}); "
            "run prepare-amazon again"
        )


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
    with open(path, encoding="utf-8-sig", newline="") as fh:
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
    release: str | None = None,
    max_words: int | None = ITEM_TEXT_WORDS,
) -> HeteroData:
    """A raw Amazon category (2014, 2018 or 2023 release) -> HeteroData (contract of
    :mod:`mllmrec_pyg.data.schema`).

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
        release=release,
        max_words=max_words,
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
    release: str | None = None,
    max_words: int | None = ITEM_TEXT_WORDS,
) -> AmazonDataset:
    """Like :func:`load_amazon` but returns the :class:`AmazonDataset` (for export)."""
    if interactions is None:
        if root is None or category is None:
            raise ValueError("give root and category, or the interactions file")
        interactions, found_meta = find_category_files(root, category)
        meta = meta if meta is not None else found_meta
    return AmazonDataset.build(
        AmazonConfig(
            interactions, meta, images, k, seed, on_error, require_meta, release, max_words
        )
    )


__all__ = [
    "INCOMPLETE_FILE",
    "ITEM_TEXT_WORDS",
    "RELEASES",
    "check_complete",
    "clean_text",
    "meta_fields",
    "read_interactions",
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
