"""``none``: an offline, deterministic stand-in for the MLLM.

It is no language model and says so: it gives **no image descriptions**
(image requests get an empty string, so items keep their own text), and its
"preference" is a list of the salient phrases that repeat across the user's
behaviour list. It reads exactly what an LLM would read, the Prompt 2 text,
so anything it sees could also reach a real model's prompt.

Salience is TF-IDF-like. For a user with behaviour list ``L`` and a phrase
``t`` (a content word or a bigram of adjacent content words),

.. math::
    \\mathrm{score}(t) = \\big(1 + \\ln c_L(t)\\big) \\cdot
        \\Big(\\ln\\frac{1 + N}{1 + \\mathrm{df}(t)} + 1\\Big)

where ``c_L(t)`` counts the items of ``L`` whose text contains ``t`` and
``df(t)`` counts the catalog items that do (``N`` items in all); the
sublinear count keeps words found in every product ("baby") from crowding
out the distinctive ones. Phrases found in at least ``min_repeat`` items come
first ("Recurring"); the best single-item phrases fill up to ``min_phrases``
("Also"). The catalog
statistics come from :meth:`OfflineBackend.fit_catalog`, which
:func:`~mllmrec_pyg.reasoning.generate_preferences` calls with the item texts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from mllmrec_pyg.reasoning.backends.base import GenerationRequest
from mllmrec_pyg.reasoning.prompts import parse_preference_prompt

log = logging.getLogger(__name__)

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    etc few for from further had has have having he her here hers herself him himself his
    how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves one ones use used using make makes made get
    gets may might must shall us per via""".split()
)
_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
_CLAUSE = re.compile(r"[.,;:!?()\[\]{}\"|/]+|\s-\s")


@lru_cache(maxsize=1 << 16)
def phrases(text: str) -> frozenset[str]:
    """Content words and adjacent content-word bigrams of ``text`` (lower-cased).

    Stop words, pure numbers, one-letter tokens and punctuation break bigrams: ``"organic cotton and bamboo"`` yields ``organic``, ``cotton``,
    ``bamboo`` and ``organic cotton``, but not ``cotton bamboo``.
    """
    out: set[str] = set()
    for clause in _CLAUSE.split(text.lower()):
        prev: str | None = None
        for tok in _TOKEN.findall(clause):
            if tok in STOPWORDS or len(tok) < 2 or tok.isdigit():
                prev = None
                continue
            out.add(tok)
            if prev is not None and prev != tok:
                out.add(f"{prev} {tok}")
            prev = tok
    return frozenset(out)


@dataclass(frozen=True)
class CatalogStats:
    """Document frequencies of phrases over the item catalog.

    Args:
        num_docs: number of catalog texts.
        df: phrase -> number of catalog texts containing it.
        digest: sha256 of the catalog texts (part of the backend fingerprint).
    """

    num_docs: int
    df: dict[str, int]
    digest: str

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CatalogStats:
        """Count phrase document frequencies over ``texts``."""
        df: Counter[str] = Counter()
        h = hashlib.sha256()
        n = 0
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"catalog text {n} is {type(t).__name__}, expected str")
            df.update(phrases(t))
            b = t.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
            n += 1
        return cls(num_docs=n, df=dict(df), digest=h.hexdigest())

    def idf(self, phrase: str) -> float:
        """Smoothed inverse document frequency, always >= 1."""
        return math.log((1 + self.num_docs) / (1 + self.df.get(phrase, 0))) + 1.0


@runtime_checkable
class CatalogAware(Protocol):
    """A backend whose output depends on statistics of the item catalog."""

    def fit_catalog(self, texts: Sequence[str]) -> None: ...


class OfflineBackend:
    """Deterministic, offline backend named ``"none"``: salient repeated phrases, no images.

    Args:
        catalog: item texts (or prepared :class:`CatalogStats`) for the IDF
            weights; may also be supplied later through :meth:`fit_catalog`.
        max_phrases: most phrases in one preference text.
        min_phrases: fill with the best single-item phrases up to this many.
        min_repeat: items a phrase must appear in to count as recurring.
    """

    name = "none"
    VERSION = 2

    def __init__(
        self,
        catalog: Sequence[str] | CatalogStats | None = None,
        max_phrases: int = 12,
        min_phrases: int = 6,
        min_repeat: int = 2,
    ) -> None:
        if not 1 <= min_phrases <= max_phrases:
            raise ValueError(
                f"need 1 <= min_phrases <= max_phrases, got {min_phrases}, {max_phrases}"
            )
        if min_repeat < 2:
            raise ValueError(f"min_repeat must be >= 2, got {min_repeat}")
        self.max_phrases = max_phrases
        self.min_phrases = min_phrases
        self.min_repeat = min_repeat
        self.stats: CatalogStats | None = None
        if catalog is not None:
            self.fit_catalog(catalog)

    def __repr__(self) -> str:
        n = self.stats.num_docs if self.stats is not None else None
        return (
            f"{type(self).__name__}(catalog={n}, max_phrases={self.max_phrases}, "
            f"min_phrases={self.min_phrases}, min_repeat={self.min_repeat})"
        )

    def fit_catalog(self, texts: Sequence[str] | CatalogStats) -> None:
        """Compute (or take) the catalog phrase statistics used for IDF weights."""
        self.stats = texts if isinstance(texts, CatalogStats) else CatalogStats.from_texts(texts)
        log.debug("offline backend fitted on %d catalog texts", self.stats.num_docs)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the output, the catalog included."""
        return {
            "backend": self.name,
            "version": self.VERSION,
            "max_phrases": self.max_phrases,
            "min_phrases": self.min_phrases,
            "min_repeat": self.min_repeat,
            "catalog": None if self.stats is None else self.stats.digest,
        }

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        """Empty text for image requests; a phrase summary for Prompt 2 requests."""
        # a request that is not a preference prompt gets "": this backend cannot see images
        parsed = (parse_preference_prompt(req.prompt) for req in requests)
        return ["" if items is None else self.summarise(items) for items in parsed]

    def salient_phrases(self, descriptions: Sequence[str]) -> tuple[list[str], list[str]]:
        """The ``(recurring, also)`` phrases of a behaviour list, best first."""
        if self.stats is None:
            raise RuntimeError(
                "OfflineBackend has no catalog statistics: call fit_catalog(item_texts) "
                "(generate_preferences does this for you)"
            )
        counts: Counter[str] = Counter()
        for d in descriptions:
            counts.update(phrases(d))
        # a word that always comes inside one of the user's bigrams is said by the bigram
        in_bigram: dict[str, int] = {}
        for t, c in counts.items():
            if " " in t:
                for w in t.split():
                    in_bigram[w] = max(in_bigram.get(w, 0), c)
        for w, c in in_bigram.items():
            if counts.get(w, 0) <= c:
                del counts[w]
        idf = self.stats.idf
        ranked = sorted(
            counts, key=lambda t: (-(1.0 + math.log(counts[t])) * idf(t), -t.count(" "), t)
        )
        chosen: list[str] = []
        covered: set[str] = set()
        recurring: list[str] = []
        also: list[str] = []
        for wanted, repeated in ((self.max_phrases, True), (self.min_phrases, False)):
            for t in ranked:
                if len(chosen) >= wanted:
                    break
                if (counts[t] >= self.min_repeat) != repeated or t in chosen:
                    continue
                words = set(t.split())
                if words <= covered:
                    continue
                chosen.append(t)
                covered |= words
                (recurring if repeated else also).append(t)
        return recurring, also

    def summarise(self, descriptions: Sequence[str]) -> str:
        """Preference text for one behaviour list."""
        if not descriptions:
            return ""
        recurring, also = self.salient_phrases(descriptions)
        parts = (("Recurring", recurring), ("Also", also))
        return " ".join(f"{head}: {', '.join(found)}." for head, found in parts if found)


__all__ = ["CatalogAware", "CatalogStats", "OfflineBackend", "STOPWORDS", "phrases"]
