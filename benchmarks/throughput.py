"""Scoring throughput: the model card's code path vs codescaler's pipeline, same inputs, one run.

    python benchmarks/throughput.py                      # CPU, mid-size Qwen3, fp32 (a few minutes)
    python benchmarks/throughput.py --profile tiny       # smoke run
    python benchmarks/throughput.py --profile qwen3-1.7b --device cuda   # GPU profile, bf16, MFU

Inputs are best-of-N style: problems with N candidates each, prompt and answer lengths
drawn from realistic ranges (real Qwen token counts with the `mid`/`qwen3-1.7b`
profiles), some duplicate candidates. The baseline is the model card's snippet run in
input order with a fixed batch of 16, padded to the batch max, with the attention mask.
Every codescaler row starts from raw responses (extraction and tokenization included);
its scores are compared with the baseline's and with the card's path on each candidate
alone, and a float64 run of the default pipeline shows the fp32 differences are rounding.
`--repeat N` reports medians of N interleaved timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The package, and the model card's reference scoring from the tests' support code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROFILES = {
    # name: model shape, token-length ranges (prompt, answer), default problems x N
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        tokenizer="bpe",
        prompt=(150, 600),
        answer=(60, 400),
        problems=24,
        n=8,
    ),
    # score_gain keeps the random score head's outputs in the real model's range (|score| < ~10).
    "mid": dict(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=1536,
        tokenizer="qwen",
        score_gain=2.0,
        prompt=(250, 900),
        answer=(80, 600),
        problems=12,
        n=8,
    ),
    "qwen3-1.7b": dict(
        hidden_size=2048,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=6144,
        tokenizer="qwen",
        prompt=(300, 1500),
        answer=(150, 1200),
        problems=96,
        n=8,
    ),
}

WORDS = [
    "given",
    "array",
    "integer",
    "return",
    "string",
    "list",
    "number",
    "each",
    "element",
    "find",
    "sum",
    "maximum",
    "minimum",
    "order",
    "sorted",
    "query",
    "output",
    "input",
    "example",
    "constraint",
    "length",
    "value",
    "index",
    "pair",
    "subarray",
    "count",
    "distinct",
    "characters",
    "graph",
    "node",
    "edge",
    "path",
    "shortest",
    "tree",
    "binary",
    "search",
    "matrix",
    "row",
    "column",
    "prefix",
    "suffix",
    "window",
    "modulo",
    "prime",
    "divisor",
    "operation",
    "test",
    "case",
    "line",
    "print",
    "read",
]


def _prose(rng: random.Random, n_chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_chars:
        sent = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
        if rng.random() < 0.15:
            sent += f"\n\nExample {rng.randint(1, 9)}:\nInput: {[rng.randint(0, 99) for _ in range(6)]}\nOutput: {rng.randint(0, 999)}\n"
        out.append(sent)
        size += len(sent) + 1
    return " ".join(out)


def _code(rng: random.Random, n_chars: int, tag: int) -> str:
    lines = [f"def solve_{tag}(nums, k):", "    total = 0", "    seen = {}"]
    size = sum(len(x) for x in lines)
    i = 0
    while size < n_chars:
        v = rng.choice(WORDS)
        line = rng.choice(
            [
                f"    for {v}_{i} in range(len(nums)):",
                f"        total += nums[{v}_{i - 1 if i else 0}] * {rng.randint(1, 9)}",
                f"    if total % {rng.randint(2, 97)} == {rng.randint(0, 5)}:",
                f"        seen[{v!r}] = seen.get({v!r}, 0) + {i}",
                f"    {v}_{i} = sorted(nums)[{rng.randint(0, 5)}:]  # keep the {v} part",
            ]
        )
        if line.endswith(":"):
            lines.append(line)
            line = "        pass"
        lines.append(line)
        size += len(line)
        i += 1
    lines.append("    return total")
    return "\n".join(lines) + "\n"


def make_records(
    problems: int,
    n: int,
    prompt: tuple[int, int],
    answer: tuple[int, int],
    seed: int = 0,
    dup_rate: float = 0.15,
) -> list[dict]:
    """Best-of-N candidates; lengths log-uniform in the token ranges (about 4 chars/token)."""
    rng = random.Random(seed)

    def loguniform(lo: int, hi: int) -> int:
        return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    records = []
    for p in range(problems):
        question = _prose(rng, 4 * loguniform(*prompt))
        cands: list[str] = []
        for k in range(n):
            if cands and rng.random() < dup_rate:
                cands.append(rng.choice(cands))
                continue
            code = _code(rng, 3 * loguniform(*answer), tag=p * 100 + k)
            cands.append(f"Here is my solution.\n\n```python\n{code}```\n\nIt runs in linear time.")
        records += [{"problem_id": f"p{p}", "question": question, "response": r} for r in cands]
    return records


@dataclass
class Row:
    name: str
    seconds: float
    candidates: int
    real_tokens: int  # non-padding tokens the forward passes processed
    processed_tokens: int  # including padding
    max_diff: float | None
    alone_diff: float | None = None  # vs the card's path on each candidate alone
    flops: float = 0.0
    peak_gib: float | None = None
    useful_tokens: int = 0  # every candidate's full sequence, as if scored alone

    def as_list(self, base_rate: float, peak: float | None) -> list[str]:
        rate = self.candidates / self.seconds
        pad = 1 - self.real_tokens / self.processed_tokens if self.processed_tokens else 0.0
        cells = [
            self.name,
            f"{rate:,.2f}",
            f"{self.useful_tokens / self.seconds:,.0f}",
            f"{100 * pad:.1f}%",
            f"{rate / base_rate:.2f}x",
            "-" if self.max_diff is None else f"{self.max_diff:.1e}",
            "-" if self.alone_diff is None else f"{self.alone_diff:.1e}",
        ]
        if peak:
            cells.append(f"{100 * self.flops / self.seconds / peak:.1f}%")
            cells.append("-" if self.peak_gib is None else f"{self.peak_gib:.1f}")
        return cells


ALL = "codescaler (all optimisations)"
NO_REUSE = "codescaler --no-prefix-reuse"


def model_flops(lengths: list[int], cfg) -> float:
    """2 * non-embedding params per token + causal attention, each sequence scored alone."""
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediate_size
    params = layers * per_layer + h  # + score head
    # QK^T and AV: each token attends to itself and every token before it.
    return sum(2 * params * n + 2 * 2 * layers * q * n * (n + 1) / 2 for n in lengths)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def baseline(
    rm, pairs: list[tuple[str, str]], device: str, max_length: int = 4096
) -> tuple[Row, list[float]]:
    """The model card's snippet: input order, fixed batch 16, padded to the batch max, with mask."""
    import torch

    tok, model = rm.tokenizer, rm.model
    scores: list[float] = []
    real = processed = 0
    sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(pairs), 16):
        convs = [
            [{"role": "user", "content": q}, {"role": "assistant", "content": c}]
            for q, c in pairs[start : start + 16]
        ]
        texts = [tok.apply_chat_template(conv, tokenize=False) for conv in convs]
        toks = tok(texts, truncation=True, padding=True, max_length=max_length, return_tensors="pt")
        real += int(toks["attention_mask"].sum())
        processed += int(toks["input_ids"].numel())
        with torch.no_grad():
            out = model(
                input_ids=toks["input_ids"].to(device),
                attention_mask=toks["attention_mask"].to(device),
            )
        scores += out.logits.squeeze(-1).cpu().tolist()  # as the card does
    sync(device)
    return Row(
        "baseline (model card, batch 16)",
        time.perf_counter() - t0,
        len(pairs),
        real,
        processed,
        None,
    ), scores


def pipeline_run(rm, records: list[dict], name: str, device: str, ref: list[float] | None, **opts):
    from codescaler_cli.config import RowOptions, ScoringOptions
    from codescaler_cli.fields import Fields
    from codescaler_cli.io.readers import Chunk
    from codescaler_cli.scoring.scorer import Scorer
    from codescaler_cli.stages import process_chunk

    scorer = Scorer(rm, ScoringOptions(**opts))
    rm.forward_tokens = 0
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    chunk = Chunk(0, records, [str(i) for i in range(len(records))])
    sync(device)
    t0 = time.perf_counter()
    result = process_chunk(chunk, Fields("question", "response"), RowOptions(), scorer)
    sync(device)
    dt = time.perf_counter() - t0
    scores = result.table.column("score").to_pylist()
    diff = None
    if ref is not None:
        diff = max(abs(a - b) for a, b in zip(scores, ref, strict=True))
    st = scorer.stats
    processed = rm.forward_tokens
    real = st.real_tokens + (processed - st.padded_tokens)  # prompt passes are (nearly) unpadded
    row = Row(name, dt, len(records), min(real, processed), processed, diff)
    if device.startswith("cuda"):
        import torch

        row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
    return row, scores, scorer


def f64_check(rm, pairs: list[tuple[str, str]], device: str) -> float:
    """Max |diff| between all optimisations and the card's path on each candidate alone,
    both in float64: what is left is double rounding, so any real error would show."""
    import copy

    from codescaler_cli.model.reward_model import RewardModel
    from codescaler_cli.scoring.scorer import Scorer
    from support.reference import model_card_scores

    rm64 = RewardModel(rm.tokenizer, copy.deepcopy(rm.model).double(), name="f64", revision=None)
    alone = model_card_scores(rm64.model, rm64.tokenizer, pairs, max_length=4096, device=device)
    # The scorer itself: the output table stores scores as float32.
    got = Scorer(rm64).score_pairs([q for q, _ in pairs], [c for _, c in pairs]).score
    return max(abs(a - b) for a, b in zip(got, alone, strict=True))


def matmul_peak(device: str, dtype) -> float:
    import torch

    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - t0)


def load_model(profile: str, device: str, dtype: str, workdir: Path, tokenizer_dir: str | None):
    """Tiny/mid: built, saved and loaded through the CLI's own loader. 1.7B: random weights in memory."""
    import torch

    from codescaler_cli.config import ModelOptions
    from codescaler_cli.model.load import load_reward_model
    from codescaler_cli.model.reward_model import RewardModel
    from codescaler_cli.tiny_model import build_tiny_reward_model, build_tokenizer

    spec = {
        k: v for k, v in PROFILES[profile].items() if k not in ("prompt", "answer", "problems", "n")
    }
    kind = spec.pop("tokenizer")
    if profile != "qwen3-1.7b":
        tok = kind
        if kind == "qwen" and tokenizer_dir:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        path = build_tiny_reward_model(workdir / profile, tokenizer=tok, **spec)
        return load_reward_model(ModelOptions(model=str(path), device=device, dtype=dtype))
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else build_tokenizer("qwen")
    cfg = Qwen3Config(
        vocab_size=151936,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        **spec,
    )
    cfg._attn_implementation = "sdpa"
    torch_dtype = {
        "auto": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
        "float16": torch.float16,
    }[dtype]
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForSequenceClassification(cfg).to(torch_dtype).eval()
    return RewardModel(tok, model, name="random Qwen3-1.7B", revision=None)


def ray_rows(args, records: list[dict], workdir: Path) -> None:
    """End-to-end runs (start-up and model loading included) of both engines on one file."""
    from codescaler_cli.config import CacheOptions, ModelOptions, RayOptions, RunOptions
    from codescaler_cli.engines.loop import run
    from codescaler_cli.engines.ray.engine import RayEngine
    from codescaler_cli.io.inputs import resolve_inputs

    src = workdir / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    specs = resolve_inputs([str(src)])
    model = ModelOptions(model=str(workdir / args.profile), device=args.device, dtype=args.dtype)
    # Chunks small enough that every worker gets several.
    chunk = max(1, len(records) // (4 * args.ray))

    def opts(name: str) -> RunOptions:
        # No score cache: the second engine must score the same rows again.
        off = CacheOptions(enabled=False)
        return RunOptions(output=str(workdir / name), model=model, chunk_size=chunk, cache=off)

    t0 = time.perf_counter()
    run(specs, opts("local.parquet"))
    local = len(records) / (time.perf_counter() - t0)
    ray_opts = opts("ray.parquet")
    summary = run(specs, ray_opts, RayEngine(ray_opts, RayOptions(num_workers=args.ray)))
    ray = summary.rows_per_second
    print(f"\n| engine (end to end, {len(records)} candidates, chunks of {chunk}) | cand/s |")
    print("| --- | --- |")
    print(f"| local | {local:,.2f} |")
    print(f"| ray, {args.ray} workers | {ray:,.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", choices=sorted(PROFILES), default="mid")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--problems", type=int)
    ap.add_argument("--n", type=int, help="candidates per problem")
    ap.add_argument(
        "--prompt-tokens", type=int, nargs=2, metavar=("LO", "HI"), help="prompt length range"
    )
    ap.add_argument(
        "--answer-tokens", type=int, nargs=2, metavar=("LO", "HI"), help="answer length range"
    )
    ap.add_argument("--budget", type=int, help="--max-tokens-per-batch for codescaler rows")
    ap.add_argument("--tokenizer-dir", help="a saved Qwen tokenizer (skips the offline conversion)")
    ap.add_argument("--only-default", action="store_true", help="skip the ablation rows")
    ap.add_argument(
        "--oom-check", action="store_true", help="GPU: force a real OOM and check recovery"
    )
    ap.add_argument("--compile", action="store_true", help="add rows with torch.compile")
    ap.add_argument(
        "--ray",
        type=int,
        metavar="N",
        help="also time --engine ray with N workers vs the local engine",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="time every path N times, interleaved; report medians"
    )
    ap.add_argument("--no-f64-check", action="store_true", help="skip the float64 exactness check")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()

    import torch

    prof = PROFILES[args.profile]
    problems = args.problems or prof["problems"]
    n = args.n or prof["n"]
    prompt = tuple(args.prompt_tokens or prof["prompt"])
    answer = tuple(args.answer_tokens or prof["answer"])
    records = make_records(problems, n, prompt, answer)
    torch.set_grad_enabled(False)
    workdir = tempfile.TemporaryDirectory()
    rm = load_model(args.profile, args.device, args.dtype, Path(workdir.name), args.tokenizer_dir)
    from codescaler_cli.extract import extract_code
    from codescaler_cli.scoring.plan import common_prefix_len
    from support.reference import model_card_scores

    pairs = [(r["question"], extract_code(r["response"]).code) for r in records]
    ids = rm.encode([rm.render(q, c) for q, c in pairs])
    lengths = [len(x) for x in ids]
    # The shared prompt of each problem (what prompt reuse computes once) and the answers.
    shared = [common_prefix_len(ids[k : k + n]) for k in range(0, len(ids), n)]
    answers = [len(x) - shared[k // n] for k, x in enumerate(ids)]
    print(
        f"profile {args.profile}: {sum(p.numel() for p in rm.model.parameters()) / 1e6:.0f}M params, "
        f"{rm.dtype}, {rm.device}; {problems} problems x {n} candidates; tokens/candidate "
        f"median {statistics.median(lengths):.0f}, max {max(lengths)}; prompt median "
        f"{statistics.median(shared):.0f}, answer median {statistics.median(answers):.0f}",
        file=sys.stderr,
    )
    # Warm up kernels and allocators on a few candidates.
    baseline(rm, pairs[:4], args.device)
    peak = None
    if args.device.startswith("cuda"):
        peak = matmul_peak(args.device, rm.dtype)
        print(f"measured {rm.dtype} matmul peak: {peak / 1e12:.0f} TFLOP/s", file=sys.stderr)

    base_row, ref = baseline(rm, pairs, args.device)
    # The test suite's reference: the card's path on each candidate alone.
    alone = model_card_scores(rm.model, rm.tokenizer, pairs, max_length=4096, device=args.device)

    def alone_diff(scores: list[float]) -> float:
        return max(abs(a - b) for a, b in zip(scores, alone, strict=True))

    base_row.alone_diff = alone_diff(ref)
    budget = args.budget
    default = dict(max_tokens_per_batch=budget)
    configs = [(ALL, default)]
    if not args.only_default:
        # The rows before the last three: one stream of passes, every key block computed.
        one = dict(default, streams=1, skip_hidden_blocks=False)
        configs = [
            (
                "sorted + token budget (mask on)",
                dict(
                    one,
                    attention_mask=True,
                    dedup=False,
                    prefix_reuse=False,
                    trim_last_layer=False,
                ),
            ),
            (
                "+ no attention mask",
                dict(one, dedup=False, prefix_reuse=False, trim_last_layer=False),
            ),
            ("+ dedup", dict(one, prefix_reuse=False, trim_last_layer=False)),
            ("+ prompt reuse", dict(one, trim_last_layer=False)),
            ("+ final layer at the scored token", one),
            ("+ hidden key blocks skipped", dict(default, streams=1)),
            *configs,
            # Prompt reuse switched off alone, as `--no-prefix-reuse` does.
            (NO_REUSE, dict(default, prefix_reuse=False)),
        ]
    rows = [base_row]
    base_row.flops = model_flops(lengths, rm.model.config)
    base_row.useful_tokens = base_row.real_tokens

    def add_row(name: str, opts: dict) -> None:
        row, scores, _ = pipeline_run(rm, records, name, args.device, ref, **opts)
        row.alone_diff = alone_diff(scores)
        # Useful work: every candidate's full sequence, as if scored alone.
        row.flops, row.useful_tokens = base_row.flops, base_row.real_tokens
        rows.append(row)

    for name, opts in configs:
        add_row(name, opts)
    # On a shared machine the load drifts: time every path again, interleaved, and keep
    # each path's median.
    seconds = [[r.seconds] for r in rows]
    for _ in range(args.repeat - 1):
        seconds[0].append(baseline(rm, pairs, args.device)[0].seconds)
        for k, (name, opts) in enumerate(configs, start=1):
            seconds[k].append(pipeline_run(rm, records, name, args.device, None, **opts)[0].seconds)
    for row, times in zip(rows, seconds, strict=True):
        row.seconds = statistics.median(times)

    def print_table() -> None:
        header = ["path", "cand/s", "candidate tok/s", "padding", "speedup"]
        header += ["max |diff| vs baseline", "vs each alone"]
        if peak:
            header += ["MFU (useful FLOPs / measured peak)", "peak GiB"]
        table = [header, ["---"] * len(header)]
        table += [r.as_list(rows[0].candidates / rows[0].seconds, peak) for r in rows]
        print("\n".join("| " + " | ".join(c) + " |" for c in table))
        rate = {r.name: r.candidates / r.seconds for r in rows}
        if NO_REUSE in rate:
            print(
                f"\nprompt reuse in the default pipeline: {rate[ALL] / rate[NO_REUSE]:.2f}x "
                "(all optimisations vs all but prompt reuse)"
            )
        print(
            f"\nmachine: {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}, "
            f"torch {torch.__version__}, {os.cpu_count()} CPUs; `python benchmarks/throughput.py "
            f"{' '.join(sys.argv[1:])}`"
        )

    print_table()
    if args.oom_check and args.device.startswith("cuda"):
        # A budget far beyond the card's memory: the first batch must hit a real CUDA OOM,
        # be halved, and finish with the same scores.
        row, _, scorer = pipeline_run(
            rm,
            records * 2,
            "forced OOM",
            args.device,
            ref * 2,
            max_tokens_per_batch=16_000_000,
            prefix_reuse=False,
            dedup=False,  # the doubled rows must really be scored
        )
        print(
            f"OOM check: {scorer.stats.oom_retries} out-of-memory retries, budget now "
            f"{scorer.budget}, max |diff| vs baseline {row.max_diff:.1e}, "
            f"{row.candidates / row.seconds:.1f} cand/s, peak {row.peak_gib:.1f} GiB"
        )
    if args.compile:
        t0 = time.perf_counter()
        rm.compile()
        # Compiled, the final layer runs whole (its early stop would break the graph): time
        # the plain and the cached-prompt graphs, compiled off the clock.
        compiled = [c for c in configs if c[0] in ("+ dedup", "+ prompt reuse")] or configs
        for _, opts in compiled:
            pipeline_run(rm, records[:24], "warm-up", args.device, None, **opts)
        print(f"torch.compile + warm-up: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for name, opts in compiled:
            add_row(f"{name}, --compile", opts)
        print_table()
    if not args.no_f64_check:
        k = min(3 * n, len(pairs))  # the first three problems
        diff = f64_check(rm, pairs[:k], args.device)
        print(
            f"float64 check, {k} candidates: all optimisations vs the card's path on each "
            f"candidate alone, max |diff| {diff:.1e}"
        )
    if args.ray:
        ray_rows(args, records, Path(workdir.name))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    main()
