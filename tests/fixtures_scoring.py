"""Candidates for the scoring tests: best-of-N groups, duplicates, lengths from 1 to 1,000+
tokens. Shared by test_scoring.py, test_streams.py and conftest.py's reference fixture."""

from __future__ import annotations

TOL = 1e-5

QUESTIONS = [
    "Write a function add(a, b) that returns a + b.",
    "Given a list of integers, return the sum of the even ones.\n" * 12,
    "Implement a stack with push/pop/peek in O(1).",
]


def make_code(n_lines: int, tag: int) -> str:
    body = "\n".join(f"    total += {i} * x  # step {i}" for i in range(n_lines))
    return f"def f{tag}(x):\n    total = 0\n{body}\n    return total\n"


def scoring_pairs() -> list[tuple[str, str]]:
    pairs = []
    for k, n in enumerate([0, 1, 3, 8, 20, 45, 100]):
        q = QUESTIONS[k % len(QUESTIONS)]
        pairs.append((q, make_code(n, k)))
    # best-of-N group sharing a question, plus an exact duplicate
    pairs += [(QUESTIONS[1], make_code(n, 100 + n)) for n in (2, 5, 9, 30)]
    # a group whose answers have equal lengths: they share one answer pass
    pairs += [(QUESTIONS[2], make_code(12, 200 + k)) for k in range(5)]
    pairs.append(pairs[-1])
    return pairs
