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
