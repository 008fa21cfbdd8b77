"""Peak memory vs input size: `codescaler score` streams, so peak RSS must not grow with rows.

    python benchmarks/memory.py                 # 50k vs 200k rows, tiny offline model
    python benchmarks/memory.py --rows 10000 40000

Each row carries 2 KB of pass-through data; candidates repeat across problems (as in
best-of-N files with duplicate samples), so the run is dominated by reading, extraction
and writing rather than by the model. Each size runs in its own process; peak RSS is
that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args()

    from codescaler_cli.tiny_model import build_tiny_reward_model

    print("| rows | input MB | chunk size | peak RSS (MiB) | seconds | rows/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_reward_model(Path(tmp) / "model")
        for n in args.rows:
            src = Path(tmp) / f"in{n}.jsonl"
            write_rows(src, n)
            out = Path(tmp) / f"out{n}.parquet"
            cmd = [
                sys.executable,
                "-m",
                "codescaler_cli",
                "score",
                str(src),
                "-o",
                str(out),
                "--model",
                str(model),
                "--device",
                "cpu",
                "-q",
                "--chunk-size",
                str(args.chunk_size),
            ]
            seconds, rss = peak_rss_mib(cmd)
            mb = src.stat().st_size / 1e6
            print(
                f"| {n:,} | {mb:,.0f} | {args.chunk_size:,} | {rss:,.0f} | {seconds:,.1f} | {n / seconds:,.0f} |",
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
