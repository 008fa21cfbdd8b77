"""Score (question, code) pairs: dedup -> render -> fit to length -> plan -> forward.

Every path here (dedup, length sorting, token budgets, shared-prefix reuse, OOM
backoff) returns the score the model card computes for the candidate alone; the test
suite checks each against that reference within 1e-5 in fp32.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from .batching import plan_batches, split_batch
from .errors import ModelError

if TYPE_CHECKING:
    from .model import RewardModel

ProgressFn = Callable[[int, int], None]  # (candidates scored, real tokens scored)
# One forward pass; may return the passes that follow from it.
Job = Callable[[], "list[Job] | None"]
# A batch is closed before padding exceeds this share of its tokens. With many candidates the
# budget fills with similar lengths anyway; with few, padding to the longest would be waste.
MAX_PADDING = 0.1


@dataclass
class ScoringOptions:
    max_length: int = 4096
    max_tokens_per_batch: int | None = None  # None: the device's default
    max_batch_size: int | None = None
    dedup: bool = True
    prefix_reuse: bool = True
    min_prefix_tokens: int = 16
    # Score several problems' candidates in one forward pass (needs a padding mask over the
    # cached prompts). None: on accelerators, where bigger batches pay; off on CPU, where the
    # mask-free path is faster.
    pack_groups: bool | None = None
    # Right padding makes the mask unnecessary for last-token pooling (exact either way).
    # None: leave it out, except for float32 on CUDA, where the masked kernel is faster.
    attention_mask: bool | None = None
    # Run the final layer at the scored token only (exact; see last_layer.py).
    trim_last_layer: bool = True
    # CPU answer passes: leave out the key blocks the causal mask hides from all of a run of
    # queries (see answer_attention.py; off, its wrapper passes every call to SDPA as is).
    skip_hidden_blocks: bool = True
    # Forward passes run at once, each with an equal share of torch's threads. None: 2 on
    # CPUs with 2+ threads (small passes leave cores idle between and inside their ops;
    # two streams fill them), else 1.
    streams: int | None = None


@dataclass
class PairScores:
    """Per-pair results, aligned with the input lists."""

    score: list[float | None]
    n_tokens: list[int | None]
    truncated: list[bool]
    too_long: list[bool]
    unique_scored: int = 0


@dataclass
class _Encoded:
    ids: list[int] | None  # None: does not fit even with an empty question
    truncated: bool
    full_length: int


@dataclass
class Prepared:
    """Deduplicated, tokenized pairs ready for the model."""

    owner: list[int]  # per input row: index into the unique pairs, -1 for no code
    questions: list[str]
    encoded: list[_Encoded]


@dataclass
class _Group:
    members: list[int]  # indices into the unique pairs
    prefix: list[int]
    suffixes: list[list[int]]


@dataclass
class ScoreStats:
    batches: int = 0
    oom_retries: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    prefix_groups: int = 0
    prefix_tokens_saved: int = 0
    budgets: list[int] = field(default_factory=list)


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


class Scorer:
    """Scores pairs with a loaded :class:`RewardModel`; reusable across chunks."""

    def __init__(self, rm: RewardModel, options: ScoringOptions | None = None) -> None:
        from .model import default_token_budget

        self.rm = rm
        self.options = options or ScoringOptions()
        if self.options.max_length < 8:
            raise ValueError("max_length must be at least 8 tokens")
        self.budget = self.options.max_tokens_per_batch or default_token_budget(rm.device)
        self.attention_mask = self.options.attention_mask
        if self.attention_mask is None:
            import torch

            self.attention_mask = rm.device.type == "cuda" and rm.dtype == torch.float32
        self.pack_groups = self.options.pack_groups
        if self.pack_groups is None:
            self.pack_groups = rm.device.type != "cpu"
        self.trim = self.options.trim_last_layer
        if self.options.streams is not None and self.options.streams < 1:
            raise ValueError("streams must be at least 1")
        self.stats = ScoreStats()
        self._lock = threading.Lock()  # stats and budget, updated from every stream

    # ------------------------------------------------------------ encoding

    def _shorten(self, question: str, code: str, full: int) -> _Encoded:
        """Cut the question's tail until the conversation fits; the code and the template's
        closing tokens (where the score is read) are never cut."""
        limit = self.options.max_length
        tok = self.rm.tokenizer
        try:
            enc = tok(question, add_special_tokens=False, return_offsets_mapping=True)
            offsets = [end for _, end in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, KeyError):
            offsets = None
        n_q = len(offsets) if offsets is not None else len(question)
        keep = n_q - (full - limit) - 1
        for _ in range(12):
            if keep <= 0:
                text = ""
            else:
                text = question[: offsets[keep - 1]] if offsets is not None else question[:keep]
            ids = self.rm.encode([self.rm.render(text, code)])[0]
            if len(ids) <= limit:
                return _Encoded(ids, True, full)
            if keep <= 0:
                return _Encoded(None, True, full)
            over = len(ids) - limit
            keep -= over if offsets is not None else max(over * 2, 1)
        return _Encoded(None, True, full)

    def encode_pairs(self, questions: Sequence[str], codes: Sequence[str]) -> list[_Encoded]:
        texts = [self.rm.render(q, c) for q, c in zip(questions, codes, strict=True)]
        out: list[_Encoded] = []
        for q, c, ids in zip(questions, codes, self.rm.encode(texts), strict=True):
            if len(ids) <= self.options.max_length:
                out.append(_Encoded(ids, False, len(ids)))
            else:
                out.append(self._shorten(q, c, len(ids)))
        return out

    # ------------------------------------------------------------ scoring

    def prepare(self, questions: Sequence[str], codes: Sequence[str]) -> Prepared:
        """Dedup and tokenize (CPU work that can run ahead of the forward passes)."""
        n = len(questions)
        slot_of: dict[tuple[str, str], int] = {}
        uq: list[str] = []
        uc: list[str] = []
        owner: list[int] = [-1] * n
        for i, (q, c) in enumerate(zip(questions, codes, strict=True)):
            if not c:
                continue
            key = (q, c)
            slot = slot_of.get(key) if self.options.dedup else None
            if slot is None:
                slot = len(uq)
                if self.options.dedup:
                    slot_of[key] = slot
                uq.append(q)
                uc.append(c)
            owner[i] = slot
        return Prepared(owner, uq, self.encode_pairs(uq, uc))

    def run(self, prepared: Prepared, progress: ProgressFn | None = None) -> PairScores:
        """Forward passes for prepared pairs; results fanned out to every input row."""
        n = len(prepared.owner)
        result = PairScores([None] * n, [None] * n, [False] * n, [False] * n)
        encoded = prepared.encoded
        scores = self._score_encoded(encoded, prepared.questions, progress)
        for i, slot in enumerate(prepared.owner):
            if slot < 0:
                continue
            enc = encoded[slot]
            result.truncated[i] = enc.truncated
            if enc.ids is None:
                result.too_long[i] = True
                result.n_tokens[i] = enc.full_length
                continue
            result.score[i] = scores[slot]
            result.n_tokens[i] = len(enc.ids)
        result.unique_scored = sum(e.ids is not None for e in encoded)
        return result

    def score_pairs(
        self,
        questions: Sequence[str],
        codes: Sequence[str],
        progress: ProgressFn | None = None,
    ) -> PairScores:
        """Score each (question, code); pairs with empty code get no score."""
        return self.run(self.prepare(questions, codes), progress)

    def _score_encoded(
        self, encoded: list[_Encoded], questions: Sequence[str], progress: ProgressFn | None
    ) -> list[float | None]:
        scores: list[float | None] = [None] * len(encoded)
        todo = [i for i, e in enumerate(encoded) if e.ids is not None]
        if progress is not None:
            progress = _serialized(progress)
        jobs: list[tuple[int, Job]] = []  # (tokens, job)
        parallel = 0  # the most passes that could ever run at once
        rest = todo
        if self.options.prefix_reuse and self.rm.supports_prefix_reuse:
            groups, rest = self._prefix_groups(encoded, questions, todo)
            for batch in self._plan_groups(groups, self.pack_groups):
                size = sum(len(g.prefix) + sum(map(len, g.suffixes)) for g in batch)
                jobs.append((size, partial(self._prompt_pass, batch, scores, progress)))
                parallel += sum(len(g.suffixes) for g in batch)
        lengths = [len(encoded[i].ids) for i in rest]
        for plan in plan_batches(lengths, self.budget, self.options.max_batch_size, MAX_PADDING):
            size = len(plan) * max(lengths[j] for j in plan)
            parallel += 1
            jobs.append(
                (size, partial(self._run_batch, [rest[j] for j in plan], encoded, scores, progress))
            )
        # Largest first: the streams then end on short passes, not one long one.
        jobs.sort(key=lambda job: -job[0])
        self._run_jobs([job for _, job in jobs], parallel)
        return scores

    def _run_batch(
        self,
        items: list[int],
        encoded: list[_Encoded],
        scores: list[float | None],
        progress: ProgressFn | None,
    ) -> None:
        """One planned batch of whole sequences."""
        seqs = [encoded[i].ids for i in items]
        out = self._halving(
            lambda b: self.rm.score_ids(b, attention_mask=self.attention_mask, trim=self.trim),
            seqs,
            len,
        )
        for i, s in zip(items, out, strict=True):
            scores[i] = s
        if progress:
            progress(len(seqs), sum(len(x) for x in seqs))

    def _streams(self) -> int:
        if self.options.streams is not None:
            return self.options.streams
        import torch

        cpu = self.rm.device.type == "cpu" and not self.rm.compiled
        return 2 if cpu and torch.get_num_threads() >= 2 else 1

    def _run_jobs(self, jobs: list[Job], parallel: int) -> None:
        """Run forward-pass jobs. A job may return follow-up jobs (a prompt pass returns its
        answer passes); those run before any new job, so prompt states are freed soon.
        With streams > 1 they run in several threads; no score depends on which stream ran
        it, and the first error stops the rest and is raised. ``parallel``: the most jobs
        that could run at once (no more streams than that)."""
        queue: deque[Job] = deque(jobs)
        streams = min(self._streams(), parallel)
        # A lone job (one problem's prompt, say) runs here with every thread; its follow-ups
        # are what the streams share.
        try:
            while queue and (streams <= 1 or len(queue) == 1):
                job = queue.popleft()
                queue.extendleft(reversed(job() or []))
                del job  # an answer pass holds its prompt states: free them before the next
        except BaseException:
            queue.clear()  # the raised error keeps this frame; not the queued prompt states
            raise
        if queue:
            self._run_streams(queue, streams)

    def _run_streams(self, queue: deque[Job], streams: int) -> None:
        import torch

        cond = threading.Condition()
        cancel = threading.Event()  # this run's own: a later run never revives its jobs
        finished = threading.Event()
        running, alive = 0, streams
        errors: list[BaseException] = []

        def next_job() -> Job | None:
            nonlocal running
            with cond:
                while not queue and running and not cancel.is_set():
                    cond.wait()
                if cancel.is_set() or not queue:
                    cond.notify_all()
                    return None
                running += 1
                return queue.popleft()

        def stop() -> None:
            """Running passes finish; queued ones (and the prompt states they hold) go."""
            with cond:
                cancel.set()
                queue.clear()
                cond.notify_all()

        def stream() -> None:
            nonlocal running, alive
            try:
                while (job := next_job()) is not None:
                    more = None
                    try:
                        more = job()
                    except BaseException as exc:
                        errors.append(exc)
                        stop()
                    del job
                    with cond:
                        running -= 1
                        if more and not cancel.is_set():
                            queue.extendleft(reversed(more))
                        del more
                        cond.notify_all()
            finally:
                with cond:
                    alive -= 1
                    if not alive:
                        finished.set()

        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // streams))  # new threads take this count
        workers = [
            threading.Thread(target=stream, name=f"codescaler-stream_{i}", daemon=True)
            for i in range(streams)
        ]
        try:
            for w in workers:
                w.start()
            finished.wait()  # interruptible: Ctrl-C lands here
        except BaseException:
            stop()  # Ctrl-C
            raise
        finally:
            try:
                for w in workers:
                    if w.ident is not None:
                        w.join()
            finally:
                torch.set_num_threads(threads)
        if errors:
            raise errors[0]

    def _prefix_groups(
        self, encoded: list[_Encoded], questions: Sequence[str], todo: list[int]
    ) -> tuple[list[_Group], list[int]]:
        """Best-of-N groups to score against their shared prompt, and the items left over.

        A group is the candidates of one question; its prompt (the longest token prefix
        they all share) runs once, then every candidate runs only its own tokens.
        """
        by_question: dict[str, list[int]] = {}
        for i in todo:
            by_question.setdefault(questions[i], []).append(i)
        rest: list[int] = []
        groups: list[_Group] = []
        for members in by_question.values():
            if len(members) < 2:
                rest.extend(members)
                continue
            seqs = [encoded[i].ids for i in members]
            # Keep at least one token per candidate to read the score from.
            p = min(common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
            if p < self.options.min_prefix_tokens:
                rest.extend(members)
                continue
            groups.append(_Group(members, seqs[0][:p], [s[p:] for s in seqs]))
            self.stats.prefix_groups += 1
            self.stats.prefix_tokens_saved += p * (len(members) - 1)
        return groups, rest

    def _plan_groups(self, groups: list[_Group], pack: bool) -> list[list[_Group]]:
        """Pack whole groups (similar prompt lengths together) into one prompt pass each.

        The prompt pass costs groups x longest prompt; the answers then run in as many
        passes as the budget needs, all reading the same cached prompt states.
        """
        groups = sorted(groups, key=lambda g: -len(g.prefix))
        if not pack:
            return [[g] for g in groups]
        plans: list[list[_Group]] = []
        cur: list[_Group] = []
        pmax = rows = 0
        for g in groups:
            width = max(pmax, len(g.prefix))
            # Bound the prompt pass and the answer rows sharing its states (their cached
            # states are gathered per answer pass, so memory stays per pass).
            if cur and ((len(cur) + 1) * width > self.budget or rows + len(g.suffixes) > 4096):
                plans.append(cur)
                cur, pmax, rows = [], 0, 0
            cur.append(g)
            pmax = max(pmax, len(g.prefix))
            rows += len(g.suffixes)
        if cur:
            plans.append(cur)
        return plans

    def _prompt_pass(
        self, batch: list[_Group], scores: list[float | None], progress: ProgressFn | None
    ) -> list[Job]:
        """The shared prompts' states; returns the answer passes that read them."""
        rows = [(gi, k) for gi, g in enumerate(batch) for k in range(len(g.suffixes))]
        pmax = max(len(g.prefix) for g in batch)
        lengths = [len(batch[gi].suffixes[k]) for gi, k in rows]
        try:
            states = self.rm.prefix_states([g.prefix for g in batch], trim=self.trim)
        except Exception as exc:
            if not is_oom(exc):
                raise
            self._release_memory()
            raise ModelError(
                f"out of memory computing prompt states ({pmax * len(batch)} tokens); lower "
                "--max-tokens-per-batch or use --no-prefix-reuse"
            ) from None
        # Answers of one pass share nothing but the cached prompts, so they are sorted by
        # length across problems and padding is capped; every row attends to up to pmax
        # cached positions, which the budget counts.
        plans = plan_batches(
            lengths, self.budget, self.options.max_batch_size, MAX_PADDING, context=pmax
        )
        return [
            partial(
                self._answer_pass, states, pmax, batch, [rows[j] for j in plan], scores, progress
            )
            for plan in plans
        ]

    def _answer_pass(
        self,
        states: Any,
        pmax: int,
        batch: list[_Group],
        part: list[tuple[int, int]],
        scores: list[float | None],
        progress: ProgressFn | None,
    ) -> None:
        """Answers of one pass against their cached prompts (pmax slots each)."""
        out = self._halving(
            lambda r: self.rm.score_suffixes(
                states, r, trim=self.trim, skip_blocks=self.options.skip_hidden_blocks
            ),
            [(gi, batch[gi].suffixes[k]) for gi, k in part],
            lambda row: len(row[1]),
            context=pmax,
        )
        for (gi, k), s in zip(part, out, strict=True):
            scores[batch[gi].members[k]] = s
        if progress:
            progress(
                len(part),
                sum(len(batch[gi].prefix) + len(batch[gi].suffixes[k]) for gi, k in part),
            )

    def _single_oom(self, n_tokens: int) -> ModelError:
        return ModelError(
            f"out of memory on a single sequence of {n_tokens} tokens; "
            "lower --max-length or use a device with more memory"
        )

    def _note_oom(self, rows: int, width: int) -> None:
        with self._lock:
            self.stats.oom_retries += 1
            # Later batches are planned with the smaller budget, so the error does not repeat.
            self.budget = max(width, min(self.budget, width * rows) // 2)
            self.stats.budgets.append(self.budget)

    def _count(self, rows: int, real: int, width: int) -> None:
        with self._lock:
            self.stats.batches += 1
            self.stats.real_tokens += real
            self.stats.padded_tokens += width * rows

    def _halving(
        self,
        call: Callable[[list], list[float]],
        items: list,
        size: Callable[[Any], int],
        context: int = 0,
    ) -> list[float]:
        """``call(items)`` for one batch; on out-of-memory it is halved and each half retried
        (no score depends on its batch), and later batches plan with a smaller budget."""
        try:
            out = call(items)
        except Exception as exc:
            if not is_oom(exc):
                raise
            self._release_memory()
            width = context + max(size(x) for x in items)
            if len(items) < 2:
                raise self._single_oom(width) from None
            self._note_oom(len(items), width)
            left, right = split_batch(items)
            return self._halving(call, left, size, context) + self._halving(
                call, right, size, context
            )
        lengths = [size(x) for x in items]
        self._count(len(items), sum(lengths), max(lengths))
        return out

    def _release_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.rm.device.type == "cuda":
            torch.cuda.empty_cache()


def _serialized(progress: ProgressFn) -> ProgressFn:
    """``progress`` called from one stream at a time."""
    lock = threading.Lock()

    def tick(candidates: int, tokens: int) -> None:
        with lock:
            progress(candidates, tokens)

    return tick
