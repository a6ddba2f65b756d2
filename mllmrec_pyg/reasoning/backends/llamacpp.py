"""The ``llamacpp`` backend: a GGUF model run in-process by llama.cpp (``llama-cpp-python``).

llama.cpp runs the GGUF file's own 4-bit weights with integer dot-product
kernels, loads in a fraction of a second and needs no de-quantised copy, which
makes it the fast path for small models on a CPU.

Requests are decoded ``parallel`` at a time in one llama.cpp context that holds
one KV-cache sequence per slot: every decode step sends one token of each
active sequence in a single ``llama_decode`` call, so the weights are read once
per step for all of them, and a finished sequence's slot takes the next request
at once (continuous batching). Prompts are prefilled in chunks of ``n_batch``
tokens.

Prompts go through the chat template stored in the GGUF file
(``tokenizer.chat_template``, rendered with Jinja2 as transformers renders
it); a file without one (a base model such as Gemma 3 270M) gets the few-shot
completion templates of :func:`~mllmrec_pyg.reasoning.prompts.completion_prompt`.

Decoding is done here, in NumPy, on llama.cpp's logits, with the same
semantics as the ``transformers`` backend: greedy by default; a repetition
penalty over every token of the prompt and the answer (logits above zero
divided, below zero multiplied); no repeated n-grams of a given size anywhere
in prompt + answer; temperature / top-k / top-p sampling under a per-request
seed drawn from ``seed`` and the prompt, so a text never depends on the other
requests or on where an interrupted run resumed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mllmrec_pyg.reasoning.backends._common import (
    BackendError,
    BackendInputError,
    check_generation_settings,
    check_requests,
    fill_from_preset,
    make_config,
    progress_bar,
    require,
)
from mllmrec_pyg.reasoning.backends.base import GenerationRequest

logger = logging.getLogger(__name__)

_DEFAULT_MAX_NEW_TOKENS = 160
INSTALL_LLAMACPP = "pip install 'mllmrec-pyg[llamacpp]'"


@dataclass
class LlamaCppBackendConfig:
    """Settings of :class:`LlamaCppBackend`.

    Settings left at ``None`` take the model preset's value (see
    :data:`mllmrec_pyg.reasoning.models.PRESETS`) or the general default.

    Args:
        model: a ``.gguf`` file or a preset name (``"smollm2"``, ``"gemma3-270m"``).
        parallel: sequences decoded together (KV-cache slots).
        n_ctx: context tokens per sequence (prompt + answer); a longer
            request is refused, naming it.
        n_batch: prompt tokens per prefill call.
        threads: CPU threads; ``None`` = the cores free now
            (:func:`mllmrec_pyg.threads.default_threads`).
        max_new_tokens: generation budget; ``None`` = the preset's, else 160.
        min_new_tokens: end-of-generation tokens and stop strings are ignored
            until this many tokens are written (for benchmarks that need a
            fixed length); 0 = off.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (only with ``do_sample``).
        top_p: nucleus sampling mass (only with ``do_sample``).
        top_k: top-k sampling (only with ``do_sample``).
        seed: sampling seed (per request: drawn from this and the prompt).
        repetition_penalty: > 1 lowers the odds of tokens already in the
            prompt or the answer; ``None`` = the preset's, else off.
        no_repeat_ngram_size: forbid repeating any n-gram of this size;
            ``None`` = the preset's, else off.
        system_prompt: an optional system turn before each prompt.
        prompt_format: ``"chat"``, ``"completion"`` or ``"auto"`` (completion
            when the GGUF file has no chat template).
        progress: show a progress bar when a call holds more requests than slots.
    """

    model: str = "smollm2"
    parallel: int = 4
    n_ctx: int = 4608
    n_batch: int = 512
    threads: int | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int = 0
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    system_prompt: str | None = None
    prompt_format: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("parallel", "n_ctx", "n_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads}: must be >= 1")
        check_generation_settings(self)
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens={self.min_new_tokens}: must be >= 0")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}: must be >= 1")


@dataclass
class _Slot:
    """One sequence being generated: its request, tokens and decoding state."""

    index: int
    tokens: list[int]
    prompt_len: int
    rng: np.random.Generator | None
    seen: set[int] = field(default_factory=set)
    ngrams: dict[tuple[int, ...], set[int]] = field(default_factory=dict)
    text: bytearray = field(default_factory=bytearray)

    @property
    def new(self) -> int:
        return len(self.tokens) - self.prompt_len


class LlamaCppBackend:
    """A GGUF model run in-process by llama.cpp, ``parallel`` sequences at a time.

    The model is loaded on the first :meth:`generate` call (or :meth:`load`);
    building the backend and asking for its :meth:`fingerprint` is cheap (the
    GGUF header is read, not the weights).

    Args:
        config: the settings; :class:`LlamaCppBackendConfig` defaults when ``None``.
        **overrides: single settings to change, e.g. ``parallel=8``.

    Example::

        backend = LlamaCppBackend(model="smollm2", parallel=8, threads=2)
        texts = backend.generate([GenerationRequest("u1", preference_prompt(items))])
    """

    name = "llamacpp"

    def __init__(self, config: LlamaCppBackendConfig | None = None, **overrides: Any):
        given = make_config(LlamaCppBackendConfig, config, overrides)
        self.model_name = given.model
        self.config = fill_from_preset(given, {"max_new_tokens": _DEFAULT_MAX_NEW_TOKENS})
        path = Path(self.config.model).expanduser()
        if path.suffix != ".gguf":
            raise ValueError(
                f"model={self.config.model!r}: the llamacpp backend takes a .gguf file or a "
                "preset name (smollm2, gemma3-270m)"
            )
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist (option model)")
        self.path = path
        self._prompt_format: str | None = None
        self._llama = None
        self._ctx = None
        self._mem = None
        self._batch = None
        self._batch_size = 0
        self._n_ctx_seq = 0
        self._template = None
        self._eog: np.ndarray | None = None
        #: running totals of this backend's generate calls
        self.stats = {
            "requests": 0,
            "prompt_tokens": 0,
            "new_tokens": 0,
            "prefill_seconds": 0.0,
            "decode_seconds": 0.0,
            "seconds": 0.0,
        }

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(model={self.model_name!r}, parallel={c.parallel}, "
            f"max_new_tokens={c.max_new_tokens}, do_sample={c.do_sample})"
        )

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def parallelism(self) -> int:
        """Requests worth handing to one :meth:`generate` call: four per slot, so a
        slot that finishes early takes another request instead of idling."""
        return 4 * self.config.parallel

    @property
    def prompt_format(self) -> str:
        """``"chat"`` or ``"completion"`` (see :class:`LlamaCppBackendConfig`)."""
        if self._prompt_format is None:
            from mllmrec_pyg.reasoning.models import gguf_chat_template

            fmt = self.config.prompt_format
            if fmt == "auto":
                fmt = "chat" if gguf_chat_template(self.path) else "completion"
            elif fmt == "chat" and not gguf_chat_template(self.path):
                raise BackendInputError(
                    f"{self.path.name} has no chat template (a base model); use "
                    "prompt_format='completion' (--prompt-format completion) or 'auto'"
                )
            self._prompt_format = fmt
        return self._prompt_format

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the text: the GGUF file (name and content, not
        where it is installed), the prompt format and the decoding settings
        (not ``parallel``, ``n_batch``, ``n_ctx`` or ``threads``)."""
        from mllmrec_pyg.reasoning.models import file_sha256

        c = self.config
        fp: dict[str, Any] = {
            "backend": self.name,
            "model": self.path.name,
            "format": "gguf",
            "weights": file_sha256(self.path)[:16],
            "max_new_tokens": c.max_new_tokens,
            "do_sample": c.do_sample,
            "system_prompt": c.system_prompt,
        }
        if c.do_sample:
            fp.update(temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, seed=c.seed)
        if c.repetition_penalty is not None and c.repetition_penalty != 1.0:
            fp["repetition_penalty"] = c.repetition_penalty
        if c.no_repeat_ngram_size:
            fp["no_repeat_ngram_size"] = c.no_repeat_ngram_size
        if c.min_new_tokens:
            fp["min_new_tokens"] = c.min_new_tokens
        if self.prompt_format == "completion":
            from mllmrec_pyg.reasoning.prompts import COMPLETION_TEMPLATE_VERSION

            fp["prompt_format"] = COMPLETION_TEMPLATE_VERSION
        return fp

    # ----------------------------------------------------------------- setup
    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    @property
    def threads(self) -> int:
        if self.config.threads is not None:
            return self.config.threads
        from mllmrec_pyg.threads import default_threads

        return default_threads()

    def load(self) -> LlamaCppBackend:
        """Load the model and make the context (otherwise the first ``generate`` does)."""
        if self._ctx is not None:
            return self
        llama_cpp = require("llama_cpp", "llamacpp", "llamacpp backend")
        c = self.config
        threads = self.threads
        start = time.perf_counter()
        # the Llama object loads the weights (memory-mapped) and gives the
        # tokenizer and metadata; its own small context is not used
        self._llama = llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=256,
            n_batch=256,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = c.parallel
        params.n_ctx = c.n_ctx * c.parallel
        params.n_batch = params.n_ubatch = max(c.n_batch, c.parallel)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        if hasattr(params, "kv_unified"):
            params.kv_unified = False  # each sequence attends to its own cells only
        ctx = llama_cpp.llama_init_from_model(self._llama.model, params)
        if not ctx:
            raise RuntimeError(
                f"llama.cpp could not make a context of {c.parallel} x {c.n_ctx} tokens for "
                f"{self.path.name}; lower parallel or n_ctx"
            )
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(ctx))
        self._batch_size = int(params.n_batch)
        self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        if self.prompt_format == "chat":
            self._template = self._compile_template()
        logger.info(
            "loaded %s with llama.cpp in %.2f s: %.0f MB of weights, %d slots x %d tokens, "
            "%d threads",
            self.path.name,
            time.perf_counter() - start,
            self.model_bytes / 2**20,
            c.parallel,
            self._n_ctx_seq,
            threads,
        )
        return self

    def close(self) -> None:
        """Free the context, the batch and the model (idempotent)."""
        if self._ctx is None:
            return
        import llama_cpp

        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        self._ctx = self._batch = self._mem = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    @property
    def model_bytes(self) -> int:
        """Size of the model's weights as llama.cpp holds them."""
        import llama_cpp

        self.load()
        return int(llama_cpp.llama_model_size(self._llama.model))

    @property
    def n_params(self) -> int:
        """The model's parameter count."""
        import llama_cpp

        self.load()
        return int(llama_cpp.llama_model_n_params(self._llama.model))

    def _compile_template(self):
        jinja2 = require("jinja2", "llamacpp", "llamacpp backend's chat template")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        from mllmrec_pyg.reasoning.models import gguf_chat_template

        def raise_exception(message: str):
            raise jinja2.exceptions.TemplateError(message)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        return env.from_string(gguf_chat_template(self.path))

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    def prompt_text(self, request: GenerationRequest) -> str:
        """The text the model reads for ``request``: its chat template rendered, or
        the few-shot completion text for a base model."""
        self.load()
        c = self.config
        if self.prompt_format == "completion":
            from mllmrec_pyg.reasoning.prompts import completion_prompt

            text = completion_prompt(request.prompt)
            return f"{c.system_prompt}\n\n{text}" if c.system_prompt else text
        messages = [{"role": "system", "content": c.system_prompt}] if c.system_prompt else []
        messages.append({"role": "user", "content": request.prompt})
        return self._template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=self._special_text(self._llama.token_bos()),
            eos_token=self._special_text(self._llama.token_eos()),
        )

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The token ids of :meth:`prompt_text`. A chat template carries its own
        special tokens; a completion text gets the BOS token the model asks for."""
        text = self.prompt_text(request)
        add_bos = self.prompt_format == "completion"
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def request_seed(self, request: GenerationRequest) -> int:
        """The sampling seed of one request: a function of ``seed`` and its prompt."""
        digest = hashlib.sha256(f"{self.config.seed}\0{request.prompt}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    # ------------------------------------------------------------ llama.cpp
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` call over ``(token, position, sequence, logits?)`` entries."""
        import llama_cpp

        b = self._batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} ({self.path.name})")

    def _logits(self, i: int) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _prefill(self, seq: int, tokens: list[int]) -> np.ndarray:
        """Clear sequence ``seq``, feed it ``tokens``; the last token's logits."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
        step = self._batch_size
        for start in range(0, len(tokens), step):
            chunk = tokens[start : start + step]
            last = start + len(chunk) == len(tokens)
            self._decode(
                [(t, start + j, seq, last and j == len(chunk) - 1) for j, t in enumerate(chunk)]
            )
        return self._logits(len(tokens) - 1 - (len(tokens) - 1) // step * step)

    def _eog_ids(self) -> np.ndarray:
        if self._eog is None:
            import llama_cpp

            self._eog = np.array(
                [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)],
                dtype=np.int64,
            )
        return self._eog

    # ------------------------------------------------------------- decoding
    def _start(self, index: int, tokens: list[int], request: GenerationRequest) -> _Slot:
        c = self.config
        rng = np.random.default_rng(self.request_seed(request)) if c.do_sample else None
        slot = _Slot(index=index, tokens=list(tokens), prompt_len=len(tokens), rng=rng)
        if c.repetition_penalty is not None and c.repetition_penalty != 1.0:
            slot.seen.update(tokens)
        n = c.no_repeat_ngram_size or 0
        if n:
            for j in range(len(tokens) - n + 1):
                slot.ngrams.setdefault(tuple(tokens[j : j + n - 1]), set()).add(tokens[j + n - 1])
        return slot

    def _choose(self, slot: _Slot, logits: np.ndarray) -> int:
        """The next token of ``slot`` from the model's ``logits`` (modified in place)."""
        c = self.config
        if slot.seen:
            ids = np.fromiter(slot.seen, dtype=np.int64, count=len(slot.seen))
            s = logits[ids]
            p = c.repetition_penalty
            logits[ids] = np.where(s < 0, s * p, s / p)
        n = c.no_repeat_ngram_size or 0
        if n and len(slot.tokens) >= n - 1:
            banned = slot.ngrams.get(tuple(slot.tokens[len(slot.tokens) - n + 1 :]))
            if banned:
                logits[list(banned)] = -np.inf
        if slot.new < c.min_new_tokens:
            logits[self._eog_ids()] = -np.inf
        if not c.do_sample:
            return int(np.argmax(logits))
        logits = logits.astype(np.float64) / c.temperature
        if c.top_k is not None and c.top_k < logits.size:
            kth = np.partition(logits, -c.top_k)[-c.top_k]
            logits[logits < kth] = -np.inf
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if c.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, c.top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        assert slot.rng is not None
        return int(slot.rng.choice(probs.size, p=probs))

    def _advance(self, slot: _Slot, token: int) -> bool:
        """Append ``token`` to ``slot``; whether the sequence is finished."""
        import llama_cpp

        c = self.config
        if slot.new >= c.min_new_tokens and llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return True
        n = c.no_repeat_ngram_size or 0
        slot.tokens.append(token)
        if slot.seen:
            slot.seen.add(token)
        if n and len(slot.tokens) >= n:
            key = tuple(slot.tokens[len(slot.tokens) - n : -1])
            slot.ngrams.setdefault(key, set()).add(token)
        slot.text += self._llama.detokenize([token])
        if slot.new >= c.max_new_tokens:
            return True
        if self.prompt_format == "completion" and slot.new >= c.min_new_tokens:
            from mllmrec_pyg.reasoning.prompts import COMPLETION_STOP

            tail = bytes(slot.text[-16:])
            return any(stop.encode() in tail for stop in COMPLETION_STOP)
        return False

    def _finish(self, slot: _Slot) -> str:
        text = bytes(slot.text).decode("utf-8", errors="replace")
        if self.prompt_format == "completion":
            from mllmrec_pyg.reasoning.prompts import cut_completion

            return cut_completion(text)
        return text.strip()

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        """Generate one text per request, in request order.

        Raises:
            BackendInputError: a request has images (llama.cpp runs text models
                here) or does not fit in ``n_ctx`` (the message names it).
            BackendError: llama.cpp failed part-way; ``partial`` holds the
                texts finished before.
        """
        requests = check_requests(requests)
        if not requests:
            return []
        self.load()
        c = self.config
        prompts: list[list[int]] = []
        for r in requests:
            if r.images:
                raise BackendInputError(
                    f"request {r.key!r} has {len(r.images)} image(s); the llamacpp backend "
                    "runs text-only models (use describe-items --from-text, or the "
                    "transformers / openai backend for images)"
                )
            tokens = self.prompt_tokens(r)
            if len(tokens) + c.max_new_tokens > self._n_ctx_seq:
                raise BackendInputError(
                    f"request {r.key!r}: {len(tokens)} prompt tokens + {c.max_new_tokens} new "
                    f"tokens exceed the context of {self._n_ctx_seq} tokens per sequence; raise "
                    "n_ctx (--n-ctx) or lower --token-budget"
                )
            prompts.append(tokens)

        results: dict[int, str] = {}
        pending = deque(range(len(requests)))
        slots: list[_Slot | None] = [None] * c.parallel
        next_token: dict[int, int] = {}
        show = c.progress and len(requests) > c.parallel
        start_all = time.perf_counter()
        with progress_bar(self.name, len(requests), show) as bar:
            try:
                while pending or any(s is not None for s in slots):
                    for seq in range(c.parallel):
                        while slots[seq] is None and pending:
                            i = pending.popleft()
                            t = time.perf_counter()
                            logits = self._prefill(seq, prompts[i])
                            self.stats["prefill_seconds"] += time.perf_counter() - t
                            self.stats["prompt_tokens"] += len(prompts[i])
                            slot = self._start(i, prompts[i], requests[i])
                            token = self._choose(slot, logits)
                            if self._advance(slot, token):
                                results[i] = self._finish(slot)
                                self.stats["new_tokens"] += slot.new
                                bar.update(1)
                            else:
                                slots[seq] = slot
                                next_token[seq] = token
                    active = [s for s in range(c.parallel) if slots[s] is not None]
                    if not active:
                        continue
                    t = time.perf_counter()
                    self._decode(
                        [
                            (next_token[s], len(slots[s].tokens) - 1, s, True)  # type: ignore[union-attr]
                            for s in active
                        ]
                    )
                    for j, s in enumerate(active):
                        slot = slots[s]
                        assert slot is not None
                        token = self._choose(slot, self._logits(j))
                        if self._advance(slot, token):
                            results[slot.index] = self._finish(slot)
                            self.stats["new_tokens"] += slot.new
                            slots[s] = None
                            bar.update(1)
                        else:
                            next_token[s] = token
                    self.stats["decode_seconds"] += time.perf_counter() - t
            except RuntimeError as err:
                raise BackendError(str(err), partial=results) from err
        self.stats["requests"] += len(requests)
        self.stats["seconds"] += time.perf_counter() - start_all
        return [results[i] for i in range(len(requests))]

    # ----------------------------------------------------------- evaluation
    def perplexity(self, text: str) -> tuple[float, int]:
        """Perplexity of ``text`` (BOS added as the model asks) and its token count.

        Uses slot 0 of the context; call it between, not during, generations.
        """
        self.load()
        tokens = list(self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))
        if len(tokens) < 2 or len(tokens) > self._n_ctx_seq:
            raise ValueError(f"perplexity needs 2..{self._n_ctx_seq} tokens, got {len(tokens)}")
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        nll = 0.0
        step = self._batch_size
        for start in range(0, len(tokens) - 1, step):
            chunk = tokens[start : start + step]
            self._decode([(t, start + j, 0, True) for j, t in enumerate(chunk)])
            for j in range(len(chunk)):
                target = start + j + 1
                if target >= len(tokens):
                    break
                logits = self._logits(j).astype(np.float64)
                m = logits.max()
                nll += m + np.log(np.exp(logits - m).sum()) - logits[tokens[target]]
        llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        n = len(tokens) - 1
        return float(np.exp(nll / n)), len(tokens)


__all__ = ["INSTALL_LLAMACPP", "LlamaCppBackend", "LlamaCppBackendConfig"]
