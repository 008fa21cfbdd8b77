"""The throughput benchmark runs end to end on the tiny profile and its checks hold."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from codescaler_cli.exactness import FLOAT32, FLOAT64

REPO = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_smoke(tmp_path):
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--profile", "tiny",
           "--problems", "1", "--n", "4", "--repeat", "1", "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())
    names = [r["name"] for r in rows]
    assert names[0].startswith("baseline") and names[-2:] == [
        "codescaler (all optimisations)",
        "codescaler --no-prefix-reuse",
    ]
    assert "+ prompt reuse" in names
    assert re.search(r"prompt reuse in the default pipeline: \d+\.\d\dx", run.stdout)
    for row in rows:
        assert row["candidates"] == 4 and row["seconds"] > 0
        assert row["alone_diff"] is not None and row["alone_diff"] <= FLOAT32
        if row is not rows[0]:
            assert row["max_diff"] <= FLOAT32
            # padding of the sorted, budgeted paths stays small (the baseline pads ~40% here)
            assert 1 - row["real_tokens"] / row["processed_tokens"] <= 0.05
    f64 = re.search(r"float64 check, 4 candidates: .* max \|diff\| (\S+)", run.stdout)
    assert f64 is not None and float(f64.group(1)) <= FLOAT64
    assert "| codescaler (all optimisations) |" in run.stdout
