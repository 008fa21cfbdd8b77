"""Peak memory vs input size: every command streams, so peak RSS must not grow with rows.

    python benchmarks/memory.py                 # score: 50k vs 200k rows, tiny offline model
    python benchmarks/memory.py --rows 10000 40000
    python benchmarks/memory.py --task rerank eval-pairs --rows 100000 1000000

rerank reads rows scored earlier (each with its provenance, so no model loads: the
ranking itself is measured); eval-pairs scores both programs of every pair.

Each row carries 2 KB of pass-through data; candidates repeat across problems (as in
best-of-N files with duplicate samples), so the run is dominated by reading, extraction
and writing rather than by the model. Each size runs in its own process; peak RSS is
that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_rows(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            p = i % 500
            row = {
                "problem_id": f"p{p}",
                "question": f"Problem {p}: return the sum of the first n squares, n = {p}.",
                "response": f"```python\ndef f(n):\n    return sum(k * k for k in range({i % 7}))\n```",
                "row": i,
                "payload": f"{i:08d}" * 256,
            }
            fh.write(json.dumps(row) + "\n")


def write_scored(path: Path, n: int, model: Path) -> None:
    """Rows as `score` writes them, scored by ``model`` (rerank keeps their scores)."""
    prov = {
        "format": "codescaler/1", "version": "bench", "task": "score", "model": str(model),
        "revision": None, "commit": None, "dtype": "float32", "max_length": 4096,
        "extract": "auto", "shaping": "softplus", "question_field": "question",
        "response_field": "response",
        "columns": ["code", "code_valid", "extract_method", "n_code_blocks", "score", "reward",
                    "n_tokens", "truncated"],
    }  # fmt: skip
    with path.open("w") as fh:
        for i in range(n):
            score = ((i * 7919) % 1000) / 100 - 5
            row = {
                "problem_id": f"p{i % 50_000}",
                "question": f"Problem {i % 50_000}",
                "response": "def f(): pass",
                "passed": i % 3 == 0,
                "payload": f"{i:08d}" * 64,
                "code": "def f(): pass", "code_valid": True, "extract_method": "unfenced",
                "n_code_blocks": 0, "score": score, "reward": math.log1p(math.exp(score)),
                "n_tokens": 20, "truncated": False, "codescaler": prov,
            }  # fmt: skip
            fh.write(json.dumps(row) + "\n")


def write_pairs(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            p = i % 500
            row = {
                "question_content": f"Problem {p}: return the sum of the first n squares.",
                "code_pos": f"def f(n):\n    return sum(k * k for k in range({p % 7}))",
                "code_neg": f"def f(n):\n    return {p % 5}",
                "payload": f"{i:08d}" * 64,
            }
            fh.write(json.dumps(row) + "\n")


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (seconds, its peak RSS in MiB) from the kernel's accounting."""
    t = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, cmd)
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument(
        "--task", nargs="+", default=["score"], choices=["score", "rerank", "eval-pairs"]
    )
    args = ap.parse_args()

    from codescaler_cli.tiny_model import build_tiny_reward_model

    print("| command | rows | input MB | chunk size | peak RSS (MiB) | seconds | rows/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_reward_model(Path(tmp) / "model")
        for task in args.task:
            for n in args.rows:
                src = Path(tmp) / f"in{n}.jsonl"
                out = Path(tmp) / f"out{n}.parquet"
                cmd = [sys.executable, "-m", "codescaler_cli", task, str(src), "-o", str(out)]
                cmd += ["--device", "cpu", "-q", "--chunk-size", str(args.chunk_size)]
                cmd += ["--no-cache"]  # the pipeline's memory, not the score cache's
                if task == "rerank":
                    write_scored(src, n, model)
                else:
                    (write_rows if task == "score" else write_pairs)(src, n)
                    cmd += ["--model", str(model)]
                seconds, rss = peak_rss_mib(cmd)
                mb = src.stat().st_size / 1e6
                print(
                    f"| {task} | {n:,} | {mb:,.0f} | {args.chunk_size:,} | {rss:,.0f} | "
                    f"{seconds:,.1f} | {n / seconds:,.0f} |",
                    flush=True,
                )
                src.unlink()
                out.unlink()
    print(
        f"\nself: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB; "
        f"{time.strftime('%Y-%m-%d')}; `python benchmarks/memory.py {' '.join(sys.argv[1:])}`"
    )


if __name__ == "__main__":
    main()
