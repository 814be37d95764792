"""Load test of ``recaudit serve`` (Starlette + Uvicorn) on loopback: 16 concurrent clients.

A trivial recommender (a fixed list of 10 titles, no model) is served on 127.0.0.1 on a free
port, in a child process so the server and the clients do not share one Python interpreter's
lock (as in real use). ``--clients`` threads each hold one keep-alive ``httpx`` connection and
post chat completions rendered with recaudit's templates (so the server parses the prompt back)
until ``--requests`` have been sent in all, after ``--warmup`` untimed ones. Printed: n,
failures, requests/s over the timed window, and latency p50/p95/p99 with a 95% bootstrap CI
for p50 and p95 (1000 resamples of the per-request latencies).

The issue's bar (the hand-written server it replaced measured 285 requests/s, p95 69 ms with
16 threads of the official client): no failures, >= 285 requests/s and p95 <= 69 ms.

Run: ``nice -n 19 .venv/bin/python benchmarks/bench_serve_load.py`` (about 10-20 s). Loopback
only: the server binds 127.0.0.1 and the clients never leave the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import threading
import time
from typing import Sequence

import httpx
import numpy as np

from audit.interface import RecRequest, Recommender
from audit.prompts import default_prompts

TITLES = [f"Film Number {i} ({1990 + i})" for i in range(10)]


class Trivial(Recommender):
    """The same 10 titles for every request."""

    name = "trivial"
    capabilities = frozenset({"generate"})

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [TITLES[:k] for _ in reqs]


def _serve(port_queue: "mp.Queue[int]", stop: "mp.Event") -> None:
    from audit.serve import build_server

    server = build_server(Trivial(), "127.0.0.1", 0)
    port_queue.put(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    thread.join(15)
    server.server_close()


def _percentile_ci(values: np.ndarray, q: float, rng: np.random.Generator, b: int = 1000) -> tuple[float, float]:
    idx = rng.integers(0, len(values), size=(b, len(values)))
    boot = np.percentile(values[idx], q, axis=1)
    return float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3000, help="timed requests in all")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    port_queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(port_queue, stop), daemon=True)
    proc.start()
    port = port_queue.get(timeout=60)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    req = RecRequest(history=tuple(TITLES[:5]), profile={"gender": "F"})
    body = json.dumps({"model": "trivial", "messages": list(default_prompts().render("generate", req, args.k).messages)})
    expected = json.dumps(TITLES[:args.k])

    lock = threading.Lock()
    counter = {"sent": 0}
    latencies: list[float] = []
    failures: list[str] = []
    total = args.warmup + args.requests
    window: dict[str, float] = {}

    def client() -> None:
        with httpx.Client(trust_env=False, timeout=30.0, headers={"Content-Type": "application/json"}) as http:
            while True:
                with lock:
                    i = counter["sent"]
                    if i >= total:
                        return
                    counter["sent"] += 1
                    if i == args.warmup:
                        window["start"] = time.perf_counter()
                t0 = time.perf_counter()
                try:
                    resp = http.post(url, content=body)
                    ok = resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == expected
                    problem = None if ok else f"HTTP {resp.status_code}: {resp.text[:120]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                dt = time.perf_counter() - t0
                if i >= args.warmup:
                    with lock:
                        latencies.append(dt)
                        if problem:
                            failures.append(problem)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end = time.perf_counter()
    finally:
        stop.set()
        proc.join(20)
    lat = np.array(latencies) * 1000.0
    rng = np.random.default_rng(0)
    rps = len(lat) / (end - window["start"])
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99))
    lo50, hi50 = _percentile_ci(lat, 50, rng)
    lo95, hi95 = _percentile_ci(lat, 95, rng)
    print(f"recaudit serve (Starlette + Uvicorn), trivial recommender, {args.clients} concurrent clients, loopback")
    print(f"n = {len(lat)} timed requests (+{args.warmup} warm-up), failures = {len(failures)}")
    print(f"throughput {rps:.0f} requests/s")
    print(f"latency p50 {p50:.1f} ms [{lo50:.1f}, {hi50:.1f}], p95 {p95:.1f} ms [{lo95:.1f}, {hi95:.1f}], "
          f"p99 {p99:.1f} ms, mean {statistics.fmean(lat):.1f} ms")
    bar = not failures and rps >= 285 and p95 <= 69
    print(f"bar (no failures, >= 285 requests/s, p95 <= 69 ms): {'met' if bar else 'NOT met'}")
    if failures:
        print("first failure:", failures[0])


if __name__ == "__main__":
    main()
