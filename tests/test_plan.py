import pytest

from codescaler_cli.scoring.plan import padding_stats, plan_batches, split_batch


def test_every_index_once_and_budget_respected():
    lengths = [5, 300, 17, 17, 900, 1, 64, 64, 64, 250, 3000, 12]
    budget = 1024
    batches = plan_batches(lengths, budget)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        # Only an item longer than the budget may exceed it, and then it is alone.
        assert width * len(b) <= budget or len(b) == 1


def test_longest_first_and_sorted_within():
    lengths = [10, 50, 20, 40, 30]
    batches = plan_batches(lengths, 80)
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)
    assert batches[0][0] == 1


def test_sorting_reduces_padding():
    import random

    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(5, 1)) + 1 for _ in range(2000)]
    planned = plan_batches(lengths, 8192)
    real, padded = padding_stats(lengths, planned)
    naive = [list(range(i, min(i + 16, len(lengths)))) for i in range(0, len(lengths), 16)]
    _, naive_padded = padding_stats(lengths, naive)
    assert padded < naive_padded
    assert (padded - real) / padded < 0.05


def test_max_batch_size():
    batches = plan_batches([1] * 10, 10_000, max_batch_size=3)
    assert [len(b) for b in batches] == [3, 3, 3, 1]


def test_empty_and_bad_args():
    assert plan_batches([], 100) == []
    with pytest.raises(ValueError):
        plan_batches([1], 0)
    with pytest.raises(ValueError):
        plan_batches([1], 10, max_batch_size=0)


def test_ties_keep_input_order():
    assert plan_batches([7, 7, 7], 100) == [[0, 1, 2]]


def test_split_batch():
    assert split_batch([4, 5, 6]) == ([4], [5, 6])
    with pytest.raises(ValueError):
        split_batch([1])


def test_max_padding_closes_batches_early():
    lengths = [100, 98, 60, 59, 58, 10]
    assert plan_batches(lengths, 10_000) == [[0, 1, 2, 3, 4, 5]]
    batches = plan_batches(lengths, 10_000, max_padding=0.1)
    assert batches == [[0, 1], [2, 3, 4], [5]]
    for b in batches:
        real, padded = padding_stats(lengths, [b])
        assert padded - real <= 0.1 * padded


# ---------------------------------------------------------------- prefix groups (pure)


def test_prefix_groups_share_the_longest_common_prompt_and_keep_a_token_each():
    from codescaler_cli.scoring.plan import prefix_groups

    seqs = [
        [1, 2, 3, 4, 5, 9],  # q1
        [1, 2, 3, 4, 5, 8, 7],  # q1
        [1, 2, 3, 4, 5],  # q1: its whole sequence is the prefix, so one token stays its own
        [6, 6, 6, 6, 6, 1],  # q2, alone: no group
        None,  # does not fit: never asked for
        [1, 2, 3, 4, 0],  # q3
        [1, 2, 3, 4, 1],  # q3: a 4-token prompt, grouped at min_prefix=4, not at 5
    ]
    questions = ["q1", "q1", "q1", "q2", "q9", "q3", "q3"]
    groups, rest = prefix_groups(seqs, questions, [0, 1, 2, 3, 5, 6], min_prefix=4)
    assert rest == [3]
    (g1, g3) = groups
    assert g1.members == [0, 1, 2] and g1.prefix == [1, 2, 3, 4]
    assert g1.suffixes == [[5, 9], [5, 8, 7], [5]]
    assert g3.members == [5, 6] and g3.prefix == [1, 2, 3, 4]
    short, rest = prefix_groups(seqs, questions, [5, 6], min_prefix=5)
    assert short == [] and rest == [5, 6]


def test_plan_groups_packs_similar_prompts_under_the_budget():
    from codescaler_cli.scoring.plan import Group, plan_groups

    groups = [Group([i], [0] * n, [[1]]) for i, n in enumerate([10, 40, 30, 20])]
    assert [[g.members[0] for g in b] for b in plan_groups(groups, 80, pack=False)] == [
        [1],
        [2],
        [3],
        [0],
    ]
    packed = plan_groups(groups, 80, pack=True)  # longest first; 2 x 40 fits, 3 x 30 not
    assert [[g.members[0] for g in b] for b in packed] == [[1, 2], [3, 0]]


# ---------------------------------------------------------------- dedup (pure)


def test_dedup_gives_each_row_its_unique_pair_and_skips_empty_code():
    from codescaler_cli.scoring.encode import dedup

    owner, uq, uc = dedup(["a", "a", "b", "a", "a"], ["x", "x", "x", "", "y"])
    assert owner == [0, 0, 1, -1, 2]
    assert list(zip(uq, uc, strict=True)) == [("a", "x"), ("b", "x"), ("a", "y")]
    owner, uq, _ = dedup(["a", "a"], ["x", "x"], enabled=False)
    assert owner == [0, 1] and uq == ["a", "a"]


# ---------------------------------------------------------------- out-of-memory backoff


def test_budget_halves_on_out_of_memory_and_keeps_every_result():
    import torch

    from codescaler_cli.errors import ModelError
    from codescaler_cli.scoring.oom import Budget

    budget = Budget(1000, torch.device("cpu"))
    calls = []

    def call(items):
        calls.append(list(items))
        if len(items) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return [float(x) for x in items]

    out = budget.run(call, [1, 2, 3, 4, 5], size=lambda x: 10)
    assert out == [1.0, 2.0, 3.0, 4.0, 5.0]  # in order, each once
    assert budget.stats.oom_retries == 2 and budget.tokens < 1000
    assert budget.stats.batches == 3  # [1, 2], [3], [4, 5]

    def always(items):
        raise RuntimeError("out of memory")

    with pytest.raises(ModelError, match="single sequence of 10 tokens"):
        budget.run(always, [7], size=lambda x: 10)

    def other(items):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        budget.run(other, [1, 2], size=lambda x: 10)


# ---------------------------------------------------------------- the stream scheduler


def _record_passes(done: list[str]):
    """Passes that log their names: parents return their children as follow-ups."""
    import threading

    lock = threading.Lock()

    def leaf(name):
        def run():
            with lock:
                done.append(name)

        return run

    def parent(name, children):
        def run():
            leaf(name)()
            return [leaf(f"{name}.{k}") for k in range(children)]

        return run

    return leaf, parent


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_run_passes_runs_follow_ups_first_in_any_number_of_streams(streams):
    from codescaler_cli.scoring.streams import run_passes

    done: list[str] = []
    leaf, parent = _record_passes(done)
    run_passes([parent("a", 3), parent("b", 2), leaf("c")], streams)
    assert sorted(done) == sorted(["a", "a.0", "a.1", "a.2", "b", "b.0", "b.1", "c"])
    if streams == 1:  # one stream: a prompt's answers run before the next prompt
        assert done == ["a", "a.0", "a.1", "a.2", "b", "b.0", "b.1", "c"]


def test_run_passes_raises_the_first_error_and_drops_queued_passes():
    from codescaler_cli.scoring.streams import run_passes

    ran = []

    def boom():
        raise ValueError("pass failed")

    with pytest.raises(ValueError, match="pass failed"):
        run_passes([boom, *[lambda i=i: ran.append(i) for i in range(20)]], 1)
    assert ran == []


# ---------------------------------------------------------------- shards plan alike


def test_shards_plan_alike_after_an_out_of_memory_and_report_a_differing_plan(rm):
    from codescaler_cli.config import ScoringOptions
    from codescaler_cli.scoring.scorer import Scorer
    from support.scoring import scoring_pairs

    pairs = scoring_pairs()
    questions, codes = [q for q, _ in pairs], [c for _, c in pairs]

    def shard(scorer: Scorer, k: int):
        return scorer.run(scorer.prepare(questions, codes), shard=(k, 2))

    # Plain batches (no prompt reuse): their members depend on the budget.
    a = Scorer(rm, ScoringOptions(max_tokens_per_batch=1024, streams=1, prefix_reuse=False))
    b = Scorer(rm, ScoringOptions(max_tokens_per_batch=1024, streams=1, prefix_reuse=False))
    b._budget.note_oom(4, 300)  # an out-of-memory error lowered b's budget for good
    first, second = shard(a, 0), shard(b, 1)
    assert first.plan == second.plan
    ran = [x or y for x, y in zip(first.ran, second.ran, strict=True)]
    assert all(ran)  # every candidate scored by one shard or the other
    small = ScoringOptions(max_tokens_per_batch=64, streams=1, prefix_reuse=False)
    other = shard(Scorer(rm, small), 1)
    assert other.plan != first.plan  # the Ray engine refuses to merge these


def test_ray_merge_of_an_empty_sharded_chunk(tmp_path):
    import pickle

    import pyarrow as pa

    from codescaler_cli.engines.ray.actor import ROW_ID, to_ipc
    from codescaler_cli.engines.ray.engine import _merge

    empty = pa.table({"code": pa.array([], pa.string()), "score": pa.array([], pa.float64()),
                      ROW_ID: pa.array([], pa.int64())})  # fmt: skip
    parts = [
        {"index": 3, "shard": k, "table": to_ipc(empty), "bad": pickle.dumps([]), "n_read": 2,
         "unique_scored": 0, "cached": 0, "plan": None}
        for k in (1, 0)
    ]  # fmt: skip
    result = _merge(parts)
    assert result.table.num_rows == 0 and result.index == 3 and result.n_read == 2
