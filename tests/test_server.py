"""`codescaler serve`: a real server process (uvicorn, tiny model) spoken to over HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from codescaler_cli.exactness import FLOAT32
from support.reference import model_card_scores
from support.serve import Server, free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "candidates.jsonl"
TOL = FLOAT32
GROUP_QUESTION = "Return the sum of the squares of a list of integers.\n" * 6


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    # No score cache: these tests count batches (test_stored_scores_... covers the cache).
    srv = Server(tiny_model_dir, "--batch-window-ms", "50", "--no-cache")
    srv.wait_ready()
    yield srv
    assert srv.stop() == 0
    assert "no API key: anyone who can reach the port can use it" in srv.proc.stderr.read()


@pytest.fixture(scope="module")
def strict(tiny_model_dir):
    """API key, tight limits, a long window (requests pile up), short read timeouts and
    grace period; no score cache (requests must queue)."""
    srv = Server(
        tiny_model_dir, "--batch-window-ms", "1500", "--max-queue", "4", "--max-items", "4",
        "--max-request-bytes", "20000", "--header-timeout", "1", "--body-timeout", "4",
        "--shutdown-timeout", "3", "--no-cache", env={"CODESCALER_API_KEY": "s3cret"},
    )  # fmt: skip
    srv.wait_ready()
    yield srv
    srv.stop()


def _post(srv: Server, route: str, body, **kw) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{srv.url}{route}", content=data, timeout=60, **kw)


def _one_line_error(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status and needle in error["message"], error
    assert "\n" not in error["message"]


AUTH = {"Authorization": "Bearer s3cret"}
ITEM = {"question": "q", "response": "x = 1\n"}


def _sample_rows() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


# ---------------------------------------------------------------- routes and parity


def test_native_route_gives_codescaler_score_bit_for_bit(server, tiny_model_dir):
    from codescaler_cli.api import score_records

    rows = _sample_rows()
    # What `codescaler score` writes for these rows (same stages, same defaults).
    expected = score_records(rows, model=str(tiny_model_dir), device="cpu")
    items = [
        {"question": r["question"], "response": r["response"], "id": i} for i, r in enumerate(rows)
    ]
    r = _post(server, "/v1/rewards", {"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["id"] for x in body["results"]] == list(range(len(rows)))
    keys = ("score", "reward", "code", "code_valid", "extract_method", "n_tokens", "truncated")
    for got, want in zip(body["results"], expected, strict=True):
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}  # bit for bit
    assert body["usage"]["candidates"] == len(rows)
    assert body["usage"]["tokens"] == sum(
        x["n_tokens"] or 0 for x in expected if x["score"] is not None
    )


def test_health_models_and_metrics(server):
    assert httpx.get(f"{server.url}/health").json()["status"] == "ready"
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["max_model_len"] == 4096
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("codescaler_requests_total", "codescaler_request_seconds_bucket",
                 "codescaler_batch_candidates_bucket", "codescaler_queue_depth",
                 "codescaler_dedup_hits_total", "codescaler_prompt_reuse_tokens_total"):  # fmt: skip
        assert name in text, name
    _post(server, "/v1/rewards", {"items": [ITEM]})
    assert _counter(server.url, "codescaler_cache_lookups_total") == 0  # --no-cache: none


def _grpo_group(n: int, k: int = 0) -> list[str]:
    return [
        f"```python\ndef f(xs):\n    return sum(x * x for x in xs) + {k * 100 + i} * 0\n```"
        for i in range(n)
    ]


async def _one_sample_clients(url: str, pairs: list[tuple[str, str]]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(q: str, r: str) -> dict:
            res = await client.post("/v1/rewards", json={"items": [{"question": q, "response": r}]})
            assert res.status_code == 200, res.text
            return res.json()["results"][0]

        return await asyncio.gather(*(one(q, r) for q, r in pairs))


def _batches(url: str) -> tuple[float, float]:
    """(batches run, requests they held), from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    count = sum_ = 0.0
    for line in text.splitlines():
        if line.startswith("codescaler_batch_requests_count"):
            count = float(line.split()[-1])
        elif line.startswith("codescaler_batch_requests_sum"):
            sum_ = float(line.split()[-1])
    return count, sum_


def test_concurrent_one_sample_requests_are_coalesced_and_stay_exact(server, tiny_model_dir):
    """A GRPO group (8 samples of one prompt, one request each) plus duplicates and other
    problems, all at once: fewer batches than requests, the shared prompt computed once,
    every score that candidate's score alone."""
    pairs = [(GROUP_QUESTION, r) for r in _grpo_group(8)]
    pairs += [(GROUP_QUESTION, pairs[0][1]), ("Reverse a string.", "x = 's'[::-1]\n")] * 2
    pairs += [(f"Problem {k}", f"y = {k}\n") for k in range(12)]
    before = _batches(server.url)
    results = asyncio.run(_one_sample_clients(server.url, pairs))
    after = _batches(server.url)
    batches, requests = after[0] - before[0], after[1] - before[1]
    assert requests == len(pairs) and batches < len(pairs) / 3, (batches, requests)
    from codescaler_cli.extract import extract_code

    extracted = [(q, extract_code(r).code) for q, r in pairs]
    alone = model_card_scores(str(tiny_model_dir), pairs=extracted, batch=False, max_length=4096)
    for got, ref in zip(results, alone, strict=True):
        assert abs(got["score"] - ref) <= TOL * max(1.0, abs(ref))
    text = httpx.get(f"{server.url}/metrics").text
    hits = [ln for ln in text.splitlines() if ln.startswith("codescaler_dedup_hits_total")]
    reuse = [
        ln for ln in text.splitlines() if ln.startswith("codescaler_prompt_reuse_tokens_total")
    ]
    assert float(hits[0].split()[-1]) >= 1 and float(reuse[0].split()[-1]) > 0


def test_openrlhf_payloads_from_a_qwen_chat_template(server, tok):
    """OpenRLHF posts the policy's templated prompt and prompt + response, special tokens
    kept: the reward is the paper's reward of the question and the extracted code."""
    question = "Write a function that adds two numbers."
    response = "<think>easy</think>\nHere it is:\n```python\ndef add(a, b):\n    return a + b\n```"
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    query = prompt + response + "<|im_end|>" + "<|endoftext|>"
    r = _post(server, "/get_reward", {"query": [query], "prompts": [prompt], "labels": [""]})
    assert r.status_code == 200, r.text
    got = r.json()
    native = _post(server, "/v1/rewards", {"items": [{"question": question, "response": response}]})
    want = native.json()["results"][0]
    assert got["rewards"] == [want["reward"]] and got["scores"] == [want["score"]]
    assert got["extra_logs"]["code_valid"] == [1.0] and got["extract_method"] == ["fence:python"]
    assert all(isinstance(v, list) for v in got["extra_logs"].values())  # numbers only
    # A plain (untemplated) prompt, several samples in one request, one without code.
    plain = {"query": ["Add.\n" + response, "Add.\nno idea"], "prompts": ["Add.\n", "Add.\n"]}
    got = _post(server, "/get_reward", plain).json()
    assert got["rewards"][1] == 0.0 and got["scores"][1] == 0.0 and got["rewards"][0] > 0


def test_large_requests_are_scored_in_pieces_and_stay_exact(server, tiny_model_dir):
    """Two requests larger than a piece (16 passes of 1024 tokens on a CPU) at once, and a
    small one: the large ones are taken one at a time, extracted a little ahead of their
    scoring; every reward is codescaler score's for the same rows."""
    from codescaler_cli.api import score_records

    rows = [
        {"question": f"Problem {i % 7}: " + "sum the squares of xs. " * 8,
         "response": f"```python\ndef f(xs):\n    return sum(x * x for x in xs) + {i}\n```"}
        for i in range(260)
    ]  # fmt: skip
    assert len(json.dumps({"items": rows})) > 16 * 1024 * 3.5  # over a piece

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            bodies = [{"items": rows}, {"items": rows[::-1]}, {"items": rows[:1]}]
            return await asyncio.gather(*(client.post("/v1/rewards", json=b) for b in bodies))

    large, reverse, small = asyncio.run(post_all())
    expected = score_records(rows, model=str(tiny_model_dir), device="cpu")
    got = [r["reward"] for r in large.json()["results"]]
    back = [r["reward"] for r in reverse.json()["results"]][::-1]
    for g, b, e in zip(got, back, expected, strict=True):
        assert abs(g - e["reward"]) <= TOL * max(1.0, abs(e["reward"])) and e["code_valid"]
        assert abs(b - e["reward"]) <= TOL * max(1.0, abs(e["reward"]))
    assert small.json()["results"][0]["reward"] == pytest.approx(expected[0]["reward"], rel=TOL)


def test_verl_classify_payloads(server, tok):
    question, response = "Add two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": response}],
        tokenize=False, add_generation_prompt=False,
    )  # fmt: skip
    want = _post(server, "/v1/rewards", {"items": [{"question": question, "response": response}]})
    reward = want.json()["results"][0]["reward"]
    body = {"model": "/path/the/trainer/uses", "input": rendered, "use_activation": False}
    got = _post(server, "/classify", body).json()
    assert got["object"] == "list" and got["id"].startswith("classify-")
    assert got["data"][-1]["probs"][-1] == reward  # what verl reads
    assert got["data"][0]["num_classes"] == 1 and got["data"][0]["label"] == "LABEL_0"
    assert got["usage"]["prompt_tokens"] == got["usage"]["total_tokens"] > 0
    old = _post(server, "/classify", {"input": [rendered, rendered], "activation": False}).json()
    assert [d["probs"][0] for d in old["data"]] == [reward, reward]
    default = _post(server, "/classify", {"input": rendered}).json()["data"][0]["probs"][0]
    assert default == pytest.approx(1 / (1 + pow(2.718281828459045, -reward)))  # sigmoid
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
    by_messages = _post(server, "/classify", {"messages": messages, "use_activation": False})
    assert by_messages.json()["data"][0]["probs"] == [reward]


BIG = "9" * 5000


@pytest.mark.parametrize(
    ("route", "body", "status", "needle"),
    [
        ("/v1/rewards", b"{not json", 400, "not valid JSON"),
        ("/v1/rewards", [1, 2], 400, "must be a JSON object"),
        ("/v1/rewards", {"items": "x"}, 400, "'items' must be a list"),
        ("/v1/rewards", {"items": [{"question": "q", "response": 3}]}, 400, "items[0].response must be a string"),
        ("/v1/rewards", {"items": [], "extract": "magic"}, 400, "'extract' must be one of"),
        ("/v1/rewards", b'{"items": [], "items": [{"question": "q", "response": "r"}]}', 400, "duplicate key 'items'"),
        ("/v1/rewards", b'{"items": [{"question": "q", "response": "r", "response": "s"}]}', 400, "duplicate key 'response'"),
        ("/v1/rewards", b'{"items": [{"question": "q", "response": "r", "id": NaN}]}', 400, "NaN is not JSON"),
        ("/v1/rewards", b'{"items": [{"question": "q", "response": "r", "id": ' + BIG.encode() + b"}]}", 400, "items[0].id must be an integer within 64 bits"),
        ("/v1/rewards", {"items": [{"question": "q", "response": "r", "id": 2**63}]}, 400, "within 64 bits"),
        ("/v1/rewards", {"items": [ITEM, {"question": "q", "response": "r", "id": 1.5}]}, 400, "items[1].id must be a string or an integer"),
        ("/v1/rewards", {"items": [{"question": "q", "response": "r", "id": True}]}, 400, "must be a string or an integer"),
        ("/get_reward", {"query": "x"}, 400, "'query' must be a list of strings"),
        ("/get_reward", {"query": ["Add.\nx = 1"]}, 400, "'prompts' is required"),
        ("/get_reward", {"query": ["<|im_start|>system\nhi<|im_end|>\nok"], "prompts": ["<|im_start|>system\nhi<|im_end|>\n"]},
         400, "query[0]: the prompt starts like a chat-template turn"),
        ("/get_reward", {"query": ["Other.\n<|im_start|>assistant\nx = 1"], "prompts": ["Add.\n"]},
         400, "query[0]: the query does not start with its prompt"),
        ("/classify", {"input": "just text, no template"}, 400, "not a conversation rendered with this model's chat template"),
        ("/classify", {"input": "x", "messages": []}, 400, "either 'input'"),
        ("/classify", {"messages": [{"role": "user", "content": "q"}]}, 400, "last message must be the assistant's"),
        ("/classify", {"input": "x", "use_activation": "no"}, 400, "'use_activation' must be true or false"),
        ("/v1/rewards", b'{"items": [{"question": "\\ud800", "response": "x"}]}', 400, "items[0].question holds a lone surrogate"),
        ("/get_reward", b'{"query": ["a\\udfff"], "prompts": ["a"]}', 400, "query[0] holds a lone surrogate"),
        ("/v1/rewards", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line_4xx(server, route, body, status, needle):
    _one_line_error(_post(server, route, body), status, needle)


def test_a_bad_id_is_refused_before_anything_is_scored(server):
    before = _metric(server.url, "codescaler_candidates_total")
    items = [{"question": "q", "response": f"x = {i}\n", "id": i} for i in range(5)]
    items[4]["id"] = -(2**63) - 1
    _one_line_error(_post(server, "/v1/rewards", {"items": items}), 400, "items[4].id")
    assert _metric(server.url, "codescaler_candidates_total") == before
    items[4]["id"] = -(2**63)  # the limits themselves are fine, and strings
    items[3]["id"] = "a string id"
    got = _post(server, "/v1/rewards", {"items": items}).json()["results"]
    assert [r["id"] for r in got] == [0, 1, 2, "a string id", -(2**63)]


def test_unknown_routes_and_methods_answer_in_the_error_format_and_head_works(server):
    _one_line_error(httpx.get(f"{server.url}/nope"), 404, "no such route")
    r = httpx.get(f"{server.url}/v1/rewards")
    _one_line_error(r, 405, "GET is not allowed")
    assert r.headers["allow"] == "POST"
    for route in ("/health", "/v1/models", "/metrics"):
        head = httpx.head(f"{server.url}{route}")
        assert head.status_code == 200 and head.content == b"", route


def _metric(url: str, name: str, **labels: str) -> float:
    """A counter's value from /metrics (0 when the series does not exist yet)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(f"{url}/metrics", headers=AUTH).text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name or series == f"{name}{{{want}}}":
            return float(value)
    return 0.0


# ---------------------------------------------------------------- limits, auth, lifecycle


class HeldRequest:
    """A request whose body is held back: the server has it in flight (its handler is
    waiting for the body), so a forming batch waits for it and shutdown must finish it."""

    def __init__(self, srv: Server, body: dict, headers: dict[str, str]) -> None:
        self.data = json.dumps(body).encode()
        lines = [
            "POST /v1/rewards HTTP/1.1",
            "Host: test",
            "Content-Type: application/json",
            f"Content-Length: {len(self.data)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def finish(self) -> tuple[int, dict]:
        self.sock.sendall(self.data)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += self.sock.recv(65536)
        head, body = raw.split(b"\r\n\r\n", 1)
        length = int(
            next(
                ln.split(b":")[1]
                for ln in head.split(b"\r\n")
                if ln.lower().startswith(b"content-length")
            )
        )
        while len(body) < length:
            body += self.sock.recv(65536)
        self.sock.close()
        return int(head.split()[1]), json.loads(body)


def test_a_lone_request_does_not_wait_for_the_window(strict):
    started = time.monotonic()
    r = _post(strict, "/v1/rewards", {"items": [ITEM]}, headers=AUTH)
    assert r.status_code == 200 and time.monotonic() - started < 1.0  # the window is 1.5 s


def test_chunked_bodies_are_limited_and_any_path_is_one_metrics_label(strict):
    def chunks():
        for _ in range(40):
            yield b" " * 1000  # 40 kB, no Content-Length: over the 20 kB limit

    r = httpx.post(f"{strict.url}/v1/rewards", content=chunks(), headers=AUTH, timeout=60)
    _one_line_error(r, 413, "--max-request-bytes")
    for i in range(3):
        assert httpx.get(f"{strict.url}/nope-{i}", headers=AUTH).status_code == 404
    text = httpx.get(f"{strict.url}/metrics", headers=AUTH).text
    assert 'route="other"' in text and "nope" not in text


def test_auth_size_limits_and_queue_full(strict):
    _one_line_error(_post(strict, "/v1/rewards", {"items": [ITEM]}), 401, "Authorization: Bearer")
    wrong = {"Authorization": "Bearer nope"}
    _one_line_error(_post(strict, "/v1/rewards", {"items": [ITEM]}, headers=wrong), 401, "API key")
    assert httpx.get(f"{strict.url}/health").status_code == 200  # open to probes
    assert httpx.get(f"{strict.url}/metrics", headers=AUTH).status_code == 200
    many = {"items": [ITEM] * 5}
    _one_line_error(_post(strict, "/v1/rewards", many, headers=AUTH), 413, "--max-items 4")
    big = {"items": [{"question": "q", "response": "x" * 30000}]}
    _one_line_error(_post(strict, "/v1/rewards", big, headers=AUTH), 413, "--max-request-bytes")

    held = HeldRequest(strict, {"items": [ITEM]}, AUTH)  # keeps the next batch waiting
    time.sleep(0.3)

    async def pile_up() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=strict.url, headers=AUTH, timeout=60) as client:
            first = asyncio.create_task(client.post("/v1/rewards", json={"items": [ITEM] * 3}))
            await asyncio.sleep(0.4)  # queued: 3 of the 4 candidates the queue holds
            second = await client.post("/v1/rewards", json={"items": [ITEM] * 2})
            status, body = await asyncio.to_thread(held.finish)
            assert status == 200, body
            return [await first, second]

    first, second = asyncio.run(pile_up())
    assert first.status_code == 200, first.text
    _one_line_error(second, 503, "candidates are waiting")
    assert second.headers["retry-after"] == "1"


def test_the_auth_scheme_is_any_case_and_an_empty_key_is_a_usage_error(strict, monkeypatch):
    for scheme in ("bearer", "BEARER", "Bearer "):
        given = {"Authorization": f"{scheme} s3cret"}
        assert _post(strict, "/v1/rewards", {"items": [ITEM]}, headers=given).status_code == 200
    basic = {"Authorization": "Basic s3cret"}
    _one_line_error(_post(strict, "/v1/rewards", {"items": [ITEM]}, headers=basic), 401, "API key")
    from typer.testing import CliRunner

    from codescaler_cli.cli.app import app

    monkeypatch.delenv("CODESCALER_API_KEY", raising=False)
    for args, env in ((["--api-key", ""], {}), (["--api-key", " "], {}),
                      ([], {"CODESCALER_API_KEY": ""})):  # fmt: skip
        r = CliRunner().invoke(app, ["serve", "--model", "unused", *args], env=env)
        assert r.exit_code == 2 and "empty" in r.output, (args, env, r.output)


def test_a_request_whose_client_left_is_dropped_and_counted_as_cancelled(strict):
    labels = {"route": "/v1/rewards", "status": "cancelled"}
    before = (
        _metric(strict.url, "codescaler_requests_total", **labels),
        _metric(strict.url, "codescaler_abandoned_candidates_total", stage="dropped"),
        _metric(strict.url, "codescaler_candidates_total"),
    )
    held = HeldRequest(strict, {"items": [ITEM]}, AUTH)  # a forming batch waits for it
    time.sleep(0.2)
    leaving = HeldRequest(strict, {"items": [ITEM] * 3}, AUTH)
    leaving.sock.sendall(leaving.data)  # queued, waiting for the held request (1.5 s window)
    time.sleep(0.3)
    leaving.sock.close()  # its client gives up
    time.sleep(0.3)
    status, body = held.finish()
    assert status == 200, body
    after = (
        _metric(strict.url, "codescaler_requests_total", **labels),
        _metric(strict.url, "codescaler_abandoned_candidates_total", stage="dropped"),
        _metric(strict.url, "codescaler_candidates_total"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 3, 1]  # 3 never scored


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_stalled_connections_are_closed_within_the_header_and_body_timeouts(strict):
    started = time.monotonic()
    stalled = []
    for _ in range(500):
        sock = socket.create_connection(("127.0.0.1", strict.port), timeout=30)
        sock.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: te")  # half a header line
        stalled.append(sock)
    mid_body = HeldRequest(strict, {"items": [ITEM]}, AUTH)  # headers sent, body never
    # The server goes on answering others meanwhile.
    assert _post(strict, "/v1/rewards", {"items": [ITEM]}, headers=AUTH).status_code == 200
    assert all(_closed(sock) for sock in stalled)
    assert time.monotonic() - started < 1 + 2  # --header-timeout 1
    assert _closed(mid_body.sock)
    assert time.monotonic() - started < 4 + 2  # --body-timeout 4
    for sock in [*stalled, mid_body.sock]:
        sock.close()
    assert _metric(strict.url, "codescaler_requests_total", route="/v1/rewards", status="408") >= 1


def test_content_length_with_chunked_encoding_is_refused_not_left_hanging(strict):
    sock = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    sock.sendall(
        b"POST /v1/rewards HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n"
        b"Content-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n" + b'{"items":[]}'
    )
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"together are ambiguous" in answer


def test_sigterm_answers_what_it_can_and_exits_within_the_grace_period(strict):
    held = HeldRequest(strict, {"items": [ITEM]}, AUTH)  # its body comes after the signal
    stalled = HeldRequest(strict, {"items": [ITEM]}, AUTH)  # its body never comes
    time.sleep(0.3)
    strict.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.3)  # shutting down, with both requests in flight
    status, body = held.finish()
    assert status == 200 and body["results"][0]["score"] is not None
    assert strict.proc.wait(timeout=60) == 0
    assert time.monotonic() - signalled < 3  # --shutdown-timeout 3 (the body timeout is 4)
    with pytest.raises(httpx.TransportError):  # no longer accepting
        httpx.get(f"{strict.url}/health", timeout=2)
    stalled.sock.close()
    log = strict.proc.stderr.read()
    assert "API key required" in log and "Traceback" not in log, log


def test_a_model_that_cannot_load_ends_the_server_with_its_error(tmp_path):
    from codescaler_cli.config import ModelOptions, RowOptions, ScoringOptions, ServeOptions
    from codescaler_cli.errors import ModelError
    from codescaler_cli.serve.app import serve
    from codescaler_cli.serve.service import Service

    broken = ModelOptions(model=str(tmp_path), device="cpu")  # a directory, no model in it
    service = Service(broken, ScoringOptions(), RowOptions(), ServeOptions(port=free_port()))
    with pytest.raises(ModelError, match="cannot load model"):
        serve(service)  # stops by itself once the load fails


# ---------------------------------------------------------------- clients


def test_clients_and_verl_reward_functions(server):
    from codescaler_cli.client import (
        AsyncRewardClient,
        RewardClient,
        ServerError,
        compute_score,
        compute_score_batch,
    )

    pair = ("Add two numbers.", "```python\ndef add(a, b):\n    return a + b\n```")
    with RewardClient(server.url) as client:
        sync = client.score([pair, {"question": "q", "response": "", "id": "empty"}])
        with pytest.raises(ServerError, match=r"400.*'shaping' must be one of"):
            client.score([pair], shaping="cubic")

    async def run_async() -> list[dict]:
        async with AsyncRewardClient(server.url) as client:
            return await client.score([pair], shaping="raw")

    raw = asyncio.run(run_async())
    assert sync[1]["id"] == "empty" and sync[1]["reward"] == 0.0
    assert raw[0]["reward"] == raw[0]["score"] == sync[0]["score"]
    one = compute_score("codescaler", pair[1], None, {"question": pair[0]}, url=server.url)
    assert one == {"score": sync[0]["reward"], "raw_score": sync[0]["score"], "code_valid": 1.0}
    batch = compute_score_batch(
        ["x", "x"], [pair[1], "no code"], [None, None],
        [{"prompt_text": pair[0]}, {"prompt_text": "q"}], url=server.url, question_key="prompt_text",
    )  # fmt: skip
    assert batch[0] == one and batch[1]["score"] == 0.0 and set(batch[1]) == set(one)
    with pytest.raises(ValueError, match="extra_info has no string 'question'"):
        compute_score("codescaler", pair[1], None, {}, url=server.url)


def _counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_stored_scores_are_answered_at_once_and_exactly(tiny_model_dir, tmp_path):
    cache = {"CODESCALER_CACHE_DIR": str(tmp_path / "cache")}
    items = [{"question": "Sum a list.", "response": f"def f(xs):\n    return sum(xs) + {i}"}
             for i in range(3)]  # fmt: skip
    first = Server(tiny_model_dir, env=cache)
    first.wait_ready()
    try:
        cold = _post(first, "/v1/rewards", {"items": items}).json()["results"]
    finally:
        assert first.stop() == 0
    # A restarted server starts warm: the same samples are answered from the store.
    again = Server(tiny_model_dir, env=cache)
    again.wait_ready()
    try:
        batches = _batches(again.url)[0]
        warm = _post(again, "/v1/rewards", {"items": items}).json()["results"]
        assert [r["score"] for r in warm] == [r["score"] for r in cold]  # bit for bit
        assert [r["reward"] for r in warm] == [r["reward"] for r in cold]
        assert _batches(again.url)[0] == batches  # no batch ran
        assert _counter(again.url, 'codescaler_cache_lookups_total{result="hit"}') == 3
        assert _counter(again.url, "codescaler_cache_bytes") > 0
        mixed = [*items[:1], {"question": "Sum a list.", "response": "def f(xs): return 0"}]
        out = _post(again, "/v1/rewards", {"items": mixed}).json()["results"]
        assert out[0]["score"] == cold[0]["score"]
        assert _counter(again.url, 'codescaler_cache_lookups_total{result="miss"}') == 1
    finally:
        assert again.stop() == 0
