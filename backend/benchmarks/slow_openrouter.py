"""A fake OpenRouter for bench_workers: every chat completion answered after a fixed delay (1 s), in its own process.

tests/fakes/openrouter_server.FakeOpenRouter is a thread-per-connection `http.server` that records every request
body (10,000 bodies of ~20 kB each) and accepts with a backlog of 5: fine for tests, not for ~400 calls in flight
for minutes. This is the same protocol (the bodies come from the same builders: `chat_completion`, `hold_all`,
`model_entry`, `key_info`) on uvicorn's event loop, which holds any number of sleeping requests for no CPU and
keeps only counters. Its process is the benchmark's child, so its CPU is measured apart from the workers'.

    .venv/bin/python benchmarks/slow_openrouter.py --delay 1.0 --port-file /tmp/port

writes its port to --port-file once it listens. `GET /api/v1/bench-stats` answers the counters (calls, most in
flight at once) and the process's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.openrouter_server import chat_completion, hold_all, key_info, model_entry

API_PREFIX = "/api/v1"
MODEL = "openai/gpt-5"  # a model the catalog says takes strict json_schema, as the agent's usual setup
ASSETS = ("BTC", "ETH", "SOL")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SlowOpenRouter:
    """The ASGI app: chat completions that hold every asset after `delay_s`; `/models`, `/key` at once."""

    def __init__(self, delay_s: float, assets: tuple[str, ...]) -> None:
        self.delay_s = delay_s
        self.content = hold_all(assets)
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.models = json.dumps({"data": [model_entry(MODEL, ["structured_outputs", "response_format"])]}).encode()
        self.key = json.dumps(key_info(limit=None)).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:  # read (and drop) the request body
            more = (await receive()).get("more_body", False)
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == f"{API_PREFIX}/chat/completions":
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self.in_flight -= 1
            body = chat_completion(self.content, model=MODEL, gen_id=f"gen-bench-{self.calls}")
            await _answer(send, 200, json.dumps(body).encode())
        elif path == f"{API_PREFIX}/models":
            await _answer(send, 200, self.models)
        elif path == f"{API_PREFIX}/key":
            await _answer(send, 200, self.key)
        elif path == f"{API_PREFIX}/bench-stats":
            stats = {
                "calls": self.calls,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "cpu_s": time.process_time(),
            }
            await _answer(send, 200, json.dumps(stats).encode())
        else:
            await _answer(send, 404, json.dumps({"error": {"code": 404, "message": f"no route {path}"}}).encode())


async def _answer(send: Send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before each chat completion's answer")
    parser.add_argument("--port-file", type=Path, required=True, help="where the listening port is written")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    args.port_file.write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(
        SlowOpenRouter(args.delay, ASSETS),
        log_config=None,
        access_log=False,
        backlog=4096,  # hundreds of calls open their connections at once at the start of a cycle
        timeout_keep_alive=120,
        loop="uvloop",
        http="httptools",
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
