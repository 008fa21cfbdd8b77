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

Abandoned requests (``--abandon-only`` runs just this case): 8 one-sample clients, alone
and then while 8 more clients each post a 2,000-sample request and hang up after 0.3 s,
over and over. The one-sample p99 latency with them should stay within 2x of without;
the server's metrics show the abandoned candidates were dropped, not scored.
"""

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import throughput  # noqa: E402  (the model profiles and the input generator)

GROUP = 8
ABANDON_SAMPLES = 2000
ABANDON_AFTER_S = 0.3


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


async def abandon_forever(port: int, body: bytes, stop: asyncio.Event, counts: dict) -> None:
    """Post ``body`` and hang up after ABANDON_AFTER_S, again and again, until ``stop``."""
    head = (
        f"POST /v1/rewards HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head + body)
        await writer.drain()
        await reader.read(1)

    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await asyncio.wait_for(post(reader, writer), ABANDON_AFTER_S)
            counts["answered"] += 1
        except asyncio.TimeoutError:
            counts["abandoned"] += 1
        writer.transport.abort()  # gone at once, unsent body and all


def abandoning_clients(port: int, body: bytes, n: int, stop: Any, counts: Any) -> None:
    """``n`` abandoning clients until ``stop`` is set; counts: [abandoned, answered]."""

    async def main() -> None:
        done = asyncio.Event()
        tally = {"abandoned": 0, "answered": 0}

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)
            done.set()

        await asyncio.gather(watch(), *(abandon_forever(port, body, done, tally) for _ in range(n)))
        counts[0], counts[1] = tally["abandoned"], tally["answered"]

    asyncio.run(main())


def metric(url: str, prefix: str) -> float:
    import httpx

    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(ln.split()[-1]) for ln in lines if ln.startswith(prefix))


def abandon_case(model_dir: str, items: list[dict], clients: int = 8) -> list[dict]:
    """One-sample p50/p99 with and without clients that abandon large requests."""
    port = _free_port()
    cmd = [sys.executable, "-m", "codescaler_cli", "serve", "--model", model_dir, "--device", "cpu",
           "--port", str(port), "--max-queue", "100000", "--max-items", str(ABANDON_SAMPLES),
           "--max-request-bytes", str(1 << 30)]  # fmt: skip
    proc = start(cmd, port)
    url = f"http://127.0.0.1:{port}"
    big = {"items": [items[i % len(items)] for i in range(ABANDON_SAMPLES)]}
    body = json.dumps(big).encode()
    one_each = [[x] for x in items]
    rows = []
    try:
        asyncio.run(load(url, one_each[:GROUP], GROUP))  # warm-up
        for abandoning in (0, clients):
            # The abandoning clients run in another process: their writes must not delay
            # the measured clients' event loop (they share the CPU all the same).
            ctx = multiprocessing.get_context("spawn")
            stop, counts = ctx.Event(), ctx.Array("i", 2)
            procs = [
                ctx.Process(target=abandoning_clients, args=(port, body, abandoning, stop, counts))
                for _ in range(1 if abandoning else 0)
            ]
            for p in procs:
                p.start()
            if procs:
                time.sleep(1.0)  # in full swing

            scored = metric(url, "codescaler_candidates_total")
            _, latencies, _ = asyncio.run(load(url, one_each, clients))
            stop.set()
            for p in procs:
                p.join(60)
            lat_ms = sorted(x * 1000 for x in latencies)
            rows.append({
                "abandoning": abandoning, "requests": len(lat_ms),
                "p50": statistics.median(lat_ms), "p99": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))],
                "abandoned": counts[0], "answered": counts[1],
                "scored": metric(url, "codescaler_candidates_total") - scored,
            })  # fmt: skip
            print(f"  abandon case, {abandoning} abandoning clients: done", file=sys.stderr)
        rows[-1]["cancelled"] = metric(
            url, 'codescaler_requests_total{route="/v1/rewards",status="cancelled"}'
        )
        rows[-1]["dropped"] = metric(url, 'codescaler_abandoned_candidates_total{stage="dropped"}')
        rows[-1]["discarded"] = metric(
            url, 'codescaler_abandoned_candidates_total{stage="discarded"}'
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    base = rows[0]["p99"]
    print()
    print(f"| one-sample clients | clients abandoning {ABANDON_SAMPLES:,}-sample requests after {ABANDON_AFTER_S:g} s "
          "| one-sample requests | p50 ms | p99 ms | p99 vs without | requests abandoned | candidates scored |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {clients} | {r['abandoning']} | {r['requests']} | {r['p50']:,.0f} | {r['p99']:,.0f} | "
              f"{r['p99'] / base:.2f}x | {r['abandoned']} | {r['scored']:,.0f} |")  # fmt: skip
    last = rows[-1]
    print(f"\nserver metrics: {last['cancelled']:.0f} requests cancelled; abandoned candidates "
          f"{last['dropped']:,.0f} dropped before scoring, {last['discarded']:,.0f} scored and discarded")  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", choices=("tiny", "mid"), default="mid")
    ap.add_argument("--problems", type=int, help="problems of 8 samples [default: the profile's]")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--tokenizer-dir", help="a saved Qwen tokenizer (skips the offline conversion)")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument(
        "--abandon-only", action="store_true", help="run only the abandoned-requests case"
    )
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
    if args.abandon_only:
        abandon_case(model_dir, items)
        return

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
    abandon = abandon_case(model_dir, items)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "abandon": abandon}, indent=1))


if __name__ == "__main__":
    main()
