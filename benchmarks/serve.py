"""Serving throughput: `codescaler serve` under RL-trainer traffic vs the batch path and a
naive server, same model, same inputs, one run.

    python benchmarks/serve.py                      # CPU, the mid-size model (several minutes)
    python benchmarks/serve.py --profile tiny       # smoke run

Inputs are GRPO-style: problems with 8 samples each, prompts longer than answers (the
throughput benchmark's generator). Rows:
- offline: the library's batch path in this process (model loaded), all candidates at once;
- codescaler serve with 1, 8 and 64 concurrent clients, each posting one sample per request
  (how OpenRLHF and verl call a reward server), and with 8 clients posting whole groups;
- a naive server with the same clients: the same library (extraction, scorer, shaping)
  scoring one request at a time, as OpenRLHF's serve_rm does without coalescing.
Each row reports candidates/s, the ratio to offline and to the naive server at the same
concurrency, p50 / p99 request latency, and the largest score difference to offline.
"""

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import throughput  # noqa: E402  (the model profiles and the input generator)

GROUP = 8


def naive_server(model_dir: str, port: int) -> None:
    """One request at a time through the library: extraction, the scorer, shaping."""
    import uvicorn
    from fastapi import FastAPI, Request

    from codescaler_cli.config import ModelOptions
    from codescaler_cli.extract import extract_code
    from codescaler_cli.model.load import load_reward_model
    from codescaler_cli.scoring.scorer import Scorer
    from codescaler_cli.shaping import shape_reward

    scorer = Scorer(load_reward_model(ModelOptions(model=model_dir, device="cpu")))
    lock = threading.Lock()
    app = FastAPI()

    def score(items: list[dict]) -> list[dict]:
        codes = [extract_code(x["response"]) for x in items]
        with lock:  # no coalescing: requests are scored one after another
            res = scorer.score_pairs([x["question"] for x in items], [c.code for c in codes])
        return [
            {"score": s, "reward": shape_reward(s, c.valid and not t)}
            for s, c, t in zip(res.score, codes, res.too_long, strict=True)
        ]

    @app.post("/v1/rewards")
    async def rewards(request: Request) -> dict:
        body = await request.json()
        return {"results": await asyncio.to_thread(score, body["items"])}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {cmd}")


async def load(
    url: str, requests: list[list[dict]], clients: int
) -> tuple[float, list[float], list]:
    """``clients`` workers post ``requests`` (lists of items) as fast as answers come."""
    import httpx

    results: list = [None] * len(requests)
    latencies: list[float] = []
    queue = list(range(len(requests)))[::-1]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while queue:
                i = queue.pop()
                t0 = time.perf_counter()
                r = await client.post("/v1/rewards", json={"items": requests[i]})
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                results[i] = r.json()["results"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - t0
    return seconds, latencies, [x for batch in results for x in batch]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", choices=("tiny", "mid"), default="mid")
    ap.add_argument("--problems", type=int, help="problems of 8 samples [default: the profile's]")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--tokenizer-dir", help="a saved Qwen tokenizer (skips the offline conversion)")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--naive-server", nargs=2, metavar=("MODEL", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_server:
        naive_server(args.naive_server[0], int(args.naive_server[1]))
        return

    from codescaler_cli.config import RowOptions
    from codescaler_cli.fields import Fields
    from codescaler_cli.io.readers import Chunk
    from codescaler_cli.scoring.scorer import Scorer
    from codescaler_cli.stages import process_chunk

    prof = throughput.PROFILES[args.profile]
    problems = args.problems or prof["problems"]
    prompt = (500, 1500) if args.profile == "mid" else (300, 900)  # prompts longer than answers
    records = throughput.make_records(problems, GROUP, prompt, prof["answer"])
    items = [{"question": r["question"], "response": r["response"]} for r in records]
    work = Path(tempfile.mkdtemp(prefix="codescaler-serve-bench-"))
    rm = throughput.load_model(args.profile, "cpu", "auto", work, args.tokenizer_dir)
    model_dir = str(work / args.profile)
    n = len(items)

    chunk = Chunk(0, items, [str(i) for i in range(n)])
    process_chunk(chunk, Fields("question", "response"), RowOptions(), Scorer(rm))  # warm-up
    t0 = time.perf_counter()
    table = process_chunk(chunk, Fields("question", "response"), RowOptions(), Scorer(rm)).table
    offline_rate = n / (time.perf_counter() - t0)
    offline = table.column("score").to_pylist()
    lengths = [len(rm.encode([rm.render(r["question"], "")])[0]) for r in records[::GROUP]]
    print(
        f"{n} candidates, {problems} problems x {GROUP}; median prompt {statistics.median(lengths):.0f} tokens"
    )

    rows: list[dict] = [{"server": "offline (library batch path)", "clients": "-", "request": "all",
                         "rate": offline_rate, "p50": None, "p99": None, "diff": 0.0}]  # fmt: skip
    one_each = [[x] for x in items]
    groups = [items[i : i + GROUP] for i in range(0, n, GROUP)]
    plans = [(c, "1 sample", one_each) for c in args.clients] + [(8, "1 group", groups)]
    rates: dict[tuple[str, int, str], float] = {}
    for name in ("codescaler serve", "naive server"):
        port = _free_port()
        if name == "codescaler serve":
            cmd = [sys.executable, "-m", "codescaler_cli", "serve", "--model", model_dir,
                   "--device", "cpu", "--port", str(port), "--max-queue", "100000"]  # fmt: skip
        else:
            cmd = [sys.executable, __file__, "--naive-server", model_dir, str(port)]
        proc = start(cmd, port)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, one_each[:GROUP], GROUP))  # warm-up
            for clients, kind, requests in plans:
                seconds, lat, got = asyncio.run(load(url, requests, clients))
                diff = max(
                    abs(g["score"] - o) / max(1.0, abs(o))
                    for g, o in zip(got, offline, strict=True)
                    if o is not None
                )
                rates[(name, clients, kind)] = n / seconds
                lat_ms = sorted(x * 1000 for x in lat)
                rows.append({"server": name, "clients": clients, "request": kind, "rate": n / seconds,
                             "p50": statistics.median(lat_ms), "p99": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))],
                             "diff": diff})  # fmt: skip
                print(
                    f"  {name}, {clients} clients, {kind}: {n / seconds:.2f} cand/s",
                    file=sys.stderr,
                )
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    print()
    print(
        "| server | clients | per request | cand/s | vs offline | vs naive | p50 ms | p99 ms | max rel. \\|diff\\| vs offline |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        naive = rates.get(("naive server", row["clients"], row["request"]))
        vs_naive = (
            f"{row['rate'] / naive:.2f}x" if naive and row["server"] != "naive server" else "-"
        )
        p50 = "-" if row["p50"] is None else f"{row['p50']:,.0f}"
        p99 = "-" if row["p99"] is None else f"{row['p99']:,.0f}"
        print(f"| {row['server']} | {row['clients']} | {row['request']} | {row['rate']:.2f} | "
              f"{row['rate'] / offline_rate:.2f}x | {vs_naive} | {p50} | {p99} | {row['diff']:.1e} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
