"""User preferences (Prompt 2) from TRAINING interactions only.

A user's behaviour list is read from ``data[INTERACTS].edge_index``, which by
the package contract holds training pairs only, so a held-out item can never
reach a preference prompt. Items are ordered oldest first (by
``data[INTERACTS].time`` when present, else by edge order); a history longer
than the token budget keeps its most recent items and the cut is recorded.

``full_history=True`` reproduces the reference implementation's leak (its
behaviour lists included valid and test interactions). It exists only to
measure that leak, and it says so loudly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError, check_edge_index
from mllmrec_pyg.reasoning.backends.base import Backend, GenerationRequest
from mllmrec_pyg.reasoning.prompts import preference_prompt
from mllmrec_pyg.reasoning.runner import run_requests
from mllmrec_pyg.reasoning.store import GenerationStore

log = logging.getLogger(__name__)

TASK = "user_preference"
DEFAULT_TOKEN_BUDGET = 4096
# a word of n characters is ceil(n / 4) chunks of up to 4; each symbol is one piece
_PIECE = re.compile(r"\w{1,4}|[^\w\s]")

TokenCounter = Callable[[str], int]


def approx_token_count(text: str) -> int:
    """A tokenizer-free estimate: one token per ~4 characters of each word, one per symbol.

    Pass a real counter (e.g. ``lambda s: len(tokenizer(s).input_ids)``) for
    exact budgets.
    """
    return len(_PIECE.findall(text))


def _require_interactions(data: HeteroData) -> tuple[int, int]:
    if USER not in data.node_types or ITEM not in data.node_types:
        raise SchemaError("data needs 'user' and 'item' node types")
    if INTERACTS not in data.edge_types or "edge_index" not in data[INTERACTS]:
        raise SchemaError(f"data[{INTERACTS}].edge_index (training pairs) is missing")
    return int(data[USER].num_nodes), int(data[ITEM].num_nodes)


def behaviour_lists(data: HeteroData, full_history: bool = False) -> dict[int, list[int]]:
    """Each user's items, oldest first, from the TRAINING ``edge_index``.

    Args:
        data: a HeteroData following the package contract.
        full_history: AUDIT ONLY. Also append the user's valid and test items
            (after the training items, i.e. as most recent), reproducing the
            reference implementation's leakage so its effect can be measured.

    Returns:
        ``{user: [item, ...]}`` for every user ``0..U-1`` (empty lists included).
    """
    num_users, num_items = _require_interactions(data)
    store = data[INTERACTS]
    ei = check_edge_index(store.edge_index, num_users, num_items, f"data[{INTERACTS}].edge_index")
    users, items = ei[0], ei[1]
    time = store.get("time")
    if time is not None:
        if time.numel() != ei.size(1):
            raise SchemaError(
                f"data[{INTERACTS}].time has {time.numel()} entries for {ei.size(1)} edges"
            )
        order = torch.argsort(time.flatten(), stable=True)
    else:
        order = torch.arange(ei.size(1))
    # stable sort by user keeps the time (or edge) order inside each user
    order = order[torch.argsort(users[order], stable=True)]
    lists: dict[int, list[int]] = {u: [] for u in range(num_users)}
    for u, i in zip(users[order].tolist(), items[order].tolist()):
        lists[u].append(i)
    if full_history:
        log.warning(
            "AUDIT MODE full_history=True: behaviour lists include VALID and TEST items; "
            "preference texts will leak held-out interactions. Use only to measure the "
            "reference implementation's leakage, never for reported results."
        )
        for key in ("val_edge_index", "test_edge_index"):
            held = store.get(key)
            if held is None:
                continue
            held = check_edge_index(held, num_users, num_items, f"data[{INTERACTS}].{key}")
            for u, i in zip(held[0].tolist(), held[1].tolist()):
                lists[u].append(i)
    return lists


@dataclass
class PreferencePrompt:
    """One user's Prompt 2 and how its behaviour list was cut.

    Args:
        user: user id.
        prompt: the full Prompt 2 text.
        items: item ids in the prompt, oldest first.
        history_length: items in the user's full behaviour list.
        dropped: oldest items left out to meet the token budget.
        truncated_item: the most recent item's text was shortened (it alone
            exceeded the budget).
        prompt_tokens: token count of ``prompt`` by the counter used.
        token_budget: the budget.
        full_history: whether the audit switch was on.
    """

    user: int
    prompt: str
    items: list[int] = field(default_factory=list)
    history_length: int = 0
    dropped: int = 0
    truncated_item: bool = False
    prompt_tokens: int = 0
    token_budget: int = DEFAULT_TOKEN_BUDGET
    full_history: bool = False

    def meta(self) -> dict[str, Any]:
        """Metadata stored with the generated text (the prompt itself excluded)."""
        d = asdict(self)
        d.pop("prompt")
        return d


def _shorten(text: str, max_tokens: int, count: TokenCounter) -> str:
    words = text.split(" ")
    lo, hi = 0, len(words)
    while lo < hi:  # longest word prefix that fits
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def fit_history(
    descriptions: Sequence[str],
    token_budget: int,
    count_tokens: TokenCounter = approx_token_count,
    item_cost: Callable[[str], int] | None = None,
) -> tuple[int, str | None, str]:
    """Keep the most recent descriptions whose Prompt 2 fits ``token_budget``.

    Args:
        descriptions: the behaviour list, oldest first.
        token_budget: maximum prompt length in tokens.
        count_tokens: token counter.
        item_cost: optional (cached) estimate of the tokens one description adds;
            only a first guess, the final prompt is always counted exactly.

    Returns:
        ``(kept, shortened_last, prompt)``: the number of most recent items kept,
        the shortened text of the last item if it alone was too long (else
        ``None``), and the resulting prompt.
    """
    n = len(descriptions)
    base = count_tokens(preference_prompt([]))
    if base > token_budget:
        raise ValueError(f"token budget {token_budget} is below Prompt 2's own length ({base})")
    # additive estimate first (one pass, newest to oldest), then exact checks
    if item_cost is None:

        def item_cost(d: str) -> int:
            return count_tokens(preference_prompt([d])) - base + 1

    kept, used = 0, base
    for d in reversed(descriptions):
        cost = item_cost(d)
        if used + cost > token_budget:
            break
        used += cost
        kept += 1
    while kept > 0:
        prompt = preference_prompt(descriptions[n - kept :])
        if count_tokens(prompt) <= token_budget:
            return kept, None, prompt
        kept -= 1
    if n == 0:
        return 0, None, preference_prompt([])
    # the newest item alone is too long: keep a shortened copy of it
    room = token_budget - base
    text = _shorten(descriptions[-1], room, count_tokens)
    while text and count_tokens(preference_prompt([text])) > token_budget:
        text = _shorten(text, max(0, count_tokens(text) - 8), count_tokens)
    return 1, text, preference_prompt([text])


def build_preference_prompts(
    data: HeteroData,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    full_history: bool = False,
    count_tokens: TokenCounter | None = None,
    item_texts: Sequence[str] | None = None,
) -> list[PreferencePrompt]:
    """Prompt 2 for every user, histories cut to ``token_budget``.

    Args:
        data: HeteroData with ``data["item"].text`` (the fused ``D^m``).
        token_budget: maximum prompt length in tokens.
        full_history: AUDIT ONLY, see :func:`behaviour_lists`.
        count_tokens: token counter; default :func:`approx_token_count`.
        item_texts: override for ``data["item"].text``.
    """
    count = count_tokens or approx_token_count
    texts = list(item_texts) if item_texts is not None else data[ITEM].get("text")
    num_users, num_items = _require_interactions(data)
    if texts is None:
        raise SchemaError('data["item"].text is missing: preferences are reasoned from item texts')
    if len(texts) != num_items:
        raise SchemaError(f'data["item"].text has {len(texts)} entries for {num_items} items')
    lists = behaviour_lists(data, full_history=full_history)
    base = count(preference_prompt([]))
    costs: dict[int, int] = {}  # per item: tokens it adds to a prompt (first guess)

    def item_cost_of(i: int) -> int:
        if i not in costs:
            costs[i] = count(preference_prompt([texts[i]])) - base + 1
        return costs[i]

    out = []
    for u in range(num_users):
        hist = lists[u]
        descs = [texts[i] for i in hist]
        cost_of = dict(zip(descs, map(item_cost_of, hist)))
        kept, short, prompt = fit_history(descs, token_budget, count, cost_of.__getitem__)
        out.append(
            PreferencePrompt(
                user=u,
                prompt=prompt,
                items=hist[len(hist) - kept :] if kept else [],
                history_length=len(hist),
                dropped=len(hist) - kept,
                truncated_item=short is not None,
                prompt_tokens=count(prompt),
                token_budget=token_budget,
                full_history=full_history,
            )
        )
    return out


def generate_preferences(
    data: HeteroData,
    backend: Backend,
    dataset_name: str = "",
    store: GenerationStore | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    full_history: bool = False,
    *,
    count_tokens: TokenCounter | None = None,
    batch_size: int | None = None,
    show_progress: bool = True,
    return_metadata: bool = False,
) -> list[str] | tuple[list[str], list[dict[str, Any]]]:
    """One preference text ``D^p_u`` per user, via Prompt 2 on training histories.

    Users with no training interaction get an empty text without a model
    call. Finished texts are committed to ``store`` one by one, so an
    interrupted run resumes where it stopped. The texts are also written to
    ``data["user"].text``.

    Args:
        data: HeteroData with ``data["item"].text`` (fused ``D^m``) and training
            ``edge_index``.
        backend: any backend; catalog-aware ones (the offline ``none``
            backend) are first fitted on the item texts.
        dataset_name: recorded in the metadata (Prompt 2 itself names no dataset).
        store: resumable generation store; ``None`` keeps results in memory.
        token_budget: maximum Prompt 2 length in tokens; longer histories keep
            their most recent items (the cut is in the metadata).
        full_history: AUDIT ONLY: include valid/test items (the reference's leak).
        count_tokens: token counter; default :func:`approx_token_count`.
        batch_size: requests per backend call; default: the backend's own
            batch size or concurrency (see :func:`~mllmrec_pyg.reasoning.runner.run_requests`).
        show_progress: tqdm bar with throughput and ETA.
        return_metadata: also return one metadata dict per user.

    Returns:
        The texts (user order), or ``(texts, metadata)`` with ``return_metadata``.
    """
    from mllmrec_pyg.reasoning.backends.offline import CatalogAware

    prompts = build_preference_prompts(data, token_budget, full_history, count_tokens)
    if isinstance(backend, CatalogAware):
        backend.fit_catalog(list(data[ITEM].text))
    metas = [p.meta() | {"dataset": dataset_name} for p in prompts]
    active = [p for p in prompts if p.items]
    requests = [GenerationRequest(key=str(p.user), prompt=p.prompt) for p in active]
    texts_active = run_requests(
        TASK,
        requests,
        backend,
        store,
        batch_size=batch_size,
        metas=[metas[p.user] for p in active],
        show_progress=show_progress,
        unit="user",
    )
    texts = [""] * len(prompts)
    for p, t in zip(active, texts_active):
        texts[p.user] = t
    cut = sum(1 for p in prompts if p.dropped or p.truncated_item)
    empty = len(prompts) - len(active)
    log.info(
        "preferences for %d users with backend %r (%s); %d histories cut to %d tokens "
        "(most recent kept), %d users without training items%s",
        len(prompts),
        backend.name,
        dataset_name or "unnamed dataset",
        cut,
        token_budget,
        empty,
        " [AUDIT full_history]" if full_history else "",
    )
    data[USER].text = texts
    return (texts, metas) if return_metadata else texts


__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "PreferencePrompt",
    "approx_token_count",
    "behaviour_lists",
    "build_preference_prompts",
    "fit_history",
    "generate_preferences",
]
