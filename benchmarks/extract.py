"""Throughput of codescaler_cli.extract on one core.

    python benchmarks/extract.py [--n 2000] [--repeat 3]

Measures responses/s per mode on synthetic short (~2 KB: prose, one solution, a usage
block), long (>= 8 KB: <think> reasoning with a draft, then several blocks in several
languages) and unfenced (~1.5 KB of prose around bare code) responses, and on the shared
corpus of real responses when it is found at ../shared/corpus relative to the repository.
Prints a markdown table.

Then the adversarial responses of tests/support/extract_cases.py (broken and unclosed
fences, fence and backtick lines, think markers, CRLF, ...): seconds per response at
``--before-kb`` for the extractor before it was made linear (kept as the tests'
reference, tests/support/extract_reference.py; runs past ``--timeout`` s are cut) and
for the current one, and the current one at 1 MB in every mode. ``--no-before`` skips
the old extractor (minutes on the quadratic shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # a checkout without installing; the shapes

from codescaler_cli.extract import EXTRACT_MODES, extract_code  # noqa: E402
from support.extract_cases import ADVERSARIAL  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "responses.jsonl"

_TEXT = (
    "the function iterates over the input once and keeps a running total so the overall "
    "complexity is linear in the number of elements while memory stays constant because "
    "only a few counters are stored edge cases such as an empty list or negative values "
    "are handled explicitly and the result is returned as an integer"
)
_WORDS = _TEXT.split(" ")


def _prose(rng: random.Random, n_chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _function(rng: random.Random, name: str, n_lines: int) -> str:
    lines = [
        f"def {name}(values: list[int], limit: int = {rng.randint(1, 99)}) -> int:",
        f'    """Return the {rng.choice(_WORDS)} total of values up to limit."""',
        "    total = 0",
        "    seen = set()",
        "    for index, value in enumerate(values):",
    ]
    for k in range(n_lines):
        op = rng.choice(["+=", "-=", "^=", "|="])
        lines.append(f"        if value % {k + 2} == {rng.randint(0, k + 1)}:")
        lines.append(f"            total {op} value * {rng.randint(1, 9)} + index  # step {k}")
    lines += ["        seen.add(value)", "    return min(total, limit * len(seen))"]
    return "\n".join(lines)


def short_response(rng: random.Random) -> str:
    name = f"solve_{rng.randint(0, 10**6)}"
    code = f"import sys\n\n\n{_function(rng, name, 9)}\n\n\n" + _function(rng, name + "_fast", 5)
    return (
        f"{_prose(rng, 250)}\n\n```python\n{code}\n```\n\n{_prose(rng, 300)}\n\n"
        f"Example usage:\n\n```python\nprint({name}([1, 2, 3], 10))  # 6\n```\n"
    )


def long_response(rng: random.Random) -> str:
    name = f"solve_{rng.randint(0, 10**6)}"
    draft = _function(rng, name, 6)
    final = (
        "import sys\n\n\n"
        + _function(rng, name + "_helper", 8)
        + "\n\n\n"
        + _function(rng, name, 14)
        + '\n\n\nif __name__ == "__main__":\n'
        + f"    print({name}(list(map(int, sys.stdin.read().split()))))"
    )
    reasoning = f"{_prose(rng, 2200)}\n\n```python\n{draft}\n```\n\n{_prose(rng, 1800)}"
    return (
        f"<think>\n{reasoning}\n</think>\n\n{_prose(rng, 300)}\n\n"
        f"```bash\npip install numpy\npython solve.py < input.txt\n```\n\n"
        f"```python\n{final}\n```\n\n{_prose(rng, 500)}\n\n"
        f"```python\nassert {name}([1, 2, 3], 10) == 6\nprint({name}([4, 5], 3))\n```\n\n"
        f"Output:\n\n```text\n6\n9\n```\n\n{_prose(rng, 400)}\n"
    )


def unfenced_response(rng: random.Random) -> str:
    """No fences: prose around bare code, the slow path (the prose is parsed too)."""
    name = f"solve_{rng.randint(0, 10**6)}"
    return f"{_prose(rng, 250)}\n\n{_function(rng, name, 12)}\n\n{_prose(rng, 250)}\n"


def _rate(fn: Callable[[str], object], texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


class _Timeout(Exception):
    pass


def _seconds(fn: Callable[[str, str], object], text: str, mode: str, limit: float) -> float | None:
    """CPU seconds of ``fn(text, mode)``, or None past ``limit`` wall seconds."""

    def stop(*_: object) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        started = time.process_time()
        fn(text, mode)
        return time.process_time() - started
    except _Timeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _cell(seconds: float | None, limit: float) -> str:
    return f"> {limit:g}" if seconds is None else f"{seconds:.3f}"


def adversarial_table(before_kb: int, timeout: float, before: bool) -> None:
    old = None
    if before:
        from support.extract_reference import extract_code as old

    size = before_kb * 1024
    print(f"\nAdversarial responses: CPU seconds per response (auto at {before_kb} KB, before "
          "and after; every mode at 1 MB, after)\n")  # fmt: skip
    print(f"| shape | before, auto, {before_kb} KB | after, auto, {before_kb} KB | "
          + " | ".join(f"after, {m}, 1 MB" for m in EXTRACT_MODES) + " |")  # fmt: skip
    print("|---|---:|---:|" + "---:|" * len(EXTRACT_MODES))
    for name, build in ADVERSARIAL.items():
        small, big = build(size), build(1 << 20)
        was = _seconds(old, small, "auto", timeout) if old else None
        now = _seconds(extract_code, small, "auto", timeout)
        modes = [_seconds(extract_code, big, m, timeout) for m in EXTRACT_MODES]
        cells = [_cell(was, timeout) if old else "-", _cell(now, timeout)]
        cells += [_cell(t, timeout) for t in modes]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="synthetic responses per set")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before-kb", type=int, default=256, help="size for before/after")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per adversarial run")
    parser.add_argument("--no-before", action="store_true", help="skip the old extractor")
    parser.add_argument("--adversarial-only", action="store_true")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    extract_code("```python\nx = 1\n```")  # build the parser outside the timings
    if args.adversarial_only:
        adversarial_table(args.before_kb, args.timeout, not args.no_before)
        return
    rng = random.Random(args.seed)
    sets = {
        "short": [short_response(rng) for _ in range(args.n)],
        "long": [long_response(rng) for _ in range(max(1, args.n // 4))],
        "unfenced": [unfenced_response(rng) for _ in range(max(1, args.n // 4))],
    }
    if CORPUS.is_file():
        with CORPUS.open(encoding="utf-8") as fh:
            sets["corpus"] = [json.loads(line)["response"] for line in fh if line.strip()]
    else:
        print(f"(corpus not found at {CORPUS}; skipped)", file=sys.stderr)

    print(f"Python {platform.python_version()}, {platform.machine()}, one core\n")
    print("| set | responses | mean size | mode | responses/s | µs/response |")
    print("|---|---:|---:|---|---:|---:|")
    for set_name, texts in sets.items():
        mean_kb = sum(len(t.encode()) for t in texts) / len(texts) / 1024
        for mode in EXTRACT_MODES:
            rate = _rate(lambda t, m=mode: extract_code(t, m), texts, args.repeat)
            print(
                f"| {set_name} | {len(texts)} | {mean_kb:.1f} KB | {mode} | {rate:,.0f} "
                f"| {1e6 / rate:,.0f} |"
            )
    adversarial_table(args.before_kb, args.timeout, not args.no_before)


if __name__ == "__main__":
    main()
