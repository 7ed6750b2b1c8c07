"""A scripted fake model server: lets the tests drive REAL agent CLIs with no model and no network.

Speaks the three wire formats the CLIs use, streaming: OpenAI chat-completions (OpenCode, aider),
Anthropic Messages (Claude Code) and OpenAI Responses (Codex). It replays a script of steps:

    {"tool": "write", "args": {"filePath": "a.txt", "content": "x"}}   a tool call
    {"text": "done"}                                                    a final answer
    {"error": "overloaded", "status": 500}                              an HTTP error
    {"limit": 20, "text": "done"}   a usage limit: HTTP 429 for 20 s from the first request of
                                    the step (``Retry-After`` and the reset time in the error
                                    message, as OpenAI and Anthropic send them), then the step
    any step + {"stall": true}      hang mid-stream (until the server stops); with
                                    {"times": N} only the first N requests of that step hang
    any step + {"meet": N}          hold each request of that step until N of them have
                                    arrived (at most MEET_TIMEOUT_S): only sessions running
                                    at once get past it without waiting

The step is chosen statelessly from the request: its index is the number of assistant-authored
items already in the history, so retries and concurrent sessions just work, and an error step
repeats for ever (errors add nothing to the history). Past the end of the script the answer is
"Done.". Requests offering no tools (title generators) get a canned answer and do not advance.
Every request is logged (``FakeModel.requests``, and one JSON line per request in ``log_path``).

Standalone for manual debugging: ``python tests/fakemodel.py --script s.json --port 8765``.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Step = dict[str, Any]
CANNED = "Fake title"
MEET_TIMEOUT_S = 60.0
USAGE_IN, USAGE_OUT = 100, 10


class FakeModel:
    """The server, run in a background thread; a context manager."""

    def __init__(
        self, script: list[Step] | None = None, *, port: int = 0, log_path: Path | None = None
    ) -> None:
        self.script: list[Step] = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self.log_path = log_path
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._stalls: dict[int, int] = {}
        self._met = threading.Condition(self._lock)
        self._meetings: dict[int, int] = {}  # ``meet`` step -> its requests so far
        self._limits: dict[int | None, float] = {}  # limit step -> its first request
        self.limits_sent: list[float] = []  # the reset (epoch seconds) of each 429 sent
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL without the ``/v1`` suffix (Claude Code's form)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeModel:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, script: list[Step]) -> None:
        """A new script, an empty log (one server can serve many tests)."""
        with self._lock:
            self.script = list(script)
            self.requests.clear()
            self._stalls.clear()
            self._meetings.clear()
            self._limits.clear()
            self.limits_sent.clear()

    def saw(self, text: str) -> bool:
        """Whether any request body so far contained ``text`` (e.g. the prompt)."""
        return any(text in json.dumps(r["body"]) for r in self.requests)

    def scripted_requests(self) -> list[dict[str, Any]]:
        """Requests that carried tools (real agent turns, not title generation)."""
        return [r for r in self.requests if r["step"] is not None]

    def served_usage(self) -> tuple[int, int]:
        """Tokens in and out the agent turns were charged: USAGE_IN/USAGE_OUT for each answer
        sent in full (an error, a stall or a client gone mid-answer reports no usage)."""
        with self._lock:
            served = sum(1 for r in self.requests if r["step"] is not None and r.get("served"))
        return served * USAGE_IN, served * USAGE_OUT

    def _log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.log_path is not None:
                with self.log_path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")

    def _should_stall(self, index: int, step: Step) -> bool:
        if not step.get("stall"):
            return False
        with self._lock:
            seen = self._stalls.get(index, 0)
            self._stalls[index] = seen + 1
        times = step.get("times")
        return times is None or seen < int(times)

    def _meet(self, index: int, step: Step) -> None:
        """Wait until ``step["meet"]`` requests of this step have arrived (or the timeout)."""
        with self._met:
            self._meetings[index] = self._meetings.get(index, 0) + 1
            self._met.notify_all()
            self._met.wait_for(
                lambda: self._meetings.get(index, 0) >= int(step["meet"]), MEET_TIMEOUT_S
            )

    def _limited_until(self, index: int | None, step: Step) -> float | None:
        """When a ``limit`` step's limit resets (epoch seconds), while it holds; else None."""
        if "limit" not in step:
            return None
        with self._lock:
            began = self._limits.setdefault(index, time.time())
        reset = float(math.ceil(began + float(step["limit"])))  # whole seconds, as said
        return reset if time.time() < reset else None

    def step_for(self, index: int) -> Step:
        return self.script[index] if index < len(self.script) else {"text": "Done."}


def _assistant_items(api: str, body: dict[str, Any]) -> int:
    if api == "responses":
        items = body.get("input")
        if not isinstance(items, list):
            return 0
        return sum(
            1 for i in items if i.get("type") == "function_call" or i.get("role") == "assistant"
        )
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeModel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log says it
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        if path.endswith("/count_tokens"):
            self._json(200, {"input_tokens": USAGE_IN})
            return
        api = (
            "chat"
            if path.endswith("/chat/completions")
            else "anthropic"
            if path.endswith("/messages")
            else "responses"
            if path.endswith("/responses")
            else None
        )
        if api is None:
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        has_tools = bool(body.get("tools"))
        index = _assistant_items(api, body) if has_tools else None
        entry = {"time": time.time(), "path": self.path, "api": api, "step": index, "body": body}
        self.fake._log(entry)
        step = self.fake.step_for(index) if index is not None else {"text": CANNED}
        if index is not None and "meet" in step:
            self.fake._meet(index, step)
        reset = self.fake._limited_until(index, step)
        if reset is not None:
            self._limit(api, reset)
            return
        if "error" in step:
            self._error(api, int(step.get("status", 500)), str(step["error"]))
            return
        stall = index is not None and self.fake._should_stall(index, step)
        stream = body.get("stream", api == "responses")
        if not stream:
            self._json(200, _whole(api, step, str(body.get("model", "fake-model"))))
            entry["served"] = True
            return
        events = _EVENTS[api](step, str(body.get("model", "fake-model")))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for n, chunk in enumerate(events):
                if stall and n == 1:
                    self.wfile.flush()
                    self.fake.stopping.wait()
                    return
                self.wfile.write(chunk.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        entry["served"] = True

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _limit(self, api: str, reset: float) -> None:
        """A provider's usage limit, as OpenAI and Anthropic answer it: 429, ``Retry-After``
        in whole seconds, the reset time (epoch seconds) in the error body."""
        seconds = reset - time.time()
        with self.fake._lock:
            self.fake.limits_sent.append(reset)
        message = f"usage limit reached; resets at {int(reset)}"
        kind = "rate_limit_error" if api == "anthropic" else "usage_limit_reached"
        error = {"type": kind, "message": message, "resets_at": int(reset)}
        if api == "anthropic":
            payload: dict[str, Any] = {"type": "error", "error": error}
        else:
            payload = {"error": {**error, "code": "rate_limit_exceeded"}}
        data = json.dumps(payload).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", str(max(1, round(seconds))))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, api: str, status: int, message: str) -> None:
        if api == "anthropic":
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": "api_error", "message": message},
            }
        else:
            payload = {"error": {"message": message, "type": "server_error", "code": None}}
        self._json(status, payload)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _chat_events(step: Step, model: str) -> Iterator[str]:
    cid, created = _id("chatcmpl"), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    if "tool" in step:
        args = json.dumps(step.get("args", {}))
        call = {
            "index": 0,
            "id": _id("call"),
            "type": "function",
            "function": {"name": step["tool"], "arguments": ""},
        }
        yield chunk({"tool_calls": [call]})
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        yield chunk({}, "tool_calls")
    else:
        yield chunk({"content": str(step.get("text", ""))})
        yield chunk({}, "stop")
    usage = {
        "prompt_tokens": USAGE_IN,
        "completion_tokens": USAGE_OUT,
        "total_tokens": USAGE_IN + USAGE_OUT,
    }
    yield _sse(
        {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
    )
    yield "data: [DONE]\n\n"


def _anthropic_events(step: Step, model: str) -> Iterator[str]:
    message = {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": USAGE_IN, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": message}, "message_start")
    if "tool" in step:
        block = {"type": "tool_use", "id": _id("toolu"), "name": step["tool"], "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(step.get("args", {}))}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": str(step.get("text", ""))}
        stop = "end_turn"
    yield _sse(
        {"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start"
    )
    yield _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": USAGE_OUT},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def _responses_item(step: Step) -> dict[str, Any]:
    if "tool" in step:
        return {
            "type": "function_call",
            "id": _id("fc"),
            "call_id": _id("call"),
            "name": step["tool"],
            "arguments": json.dumps(step.get("args", {})),
            "status": "completed",
        }
    return {
        "type": "message",
        "id": _id("msg"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": str(step.get("text", "")), "annotations": []}],
    }


def _responses_events(step: Step, model: str) -> Iterator[str]:
    rid = _id("resp")
    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model}
    yield _sse(
        {"type": "response.created", "response": {**base, "status": "in_progress", "output": []}},
        "response.created",
    )
    item = _responses_item(step)
    added = {**item, "status": "in_progress"}
    if item["type"] == "message":
        added["content"] = []
    yield _sse(
        {"type": "response.output_item.added", "output_index": 0, "item": added},
        "response.output_item.added",
    )
    if item["type"] == "message":
        yield _sse(
            {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": item["content"][0]["text"],
            },
            "response.output_text.delta",
        )
    yield _sse(
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        "response.output_item.done",
    )
    usage = {
        "input_tokens": USAGE_IN,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": USAGE_OUT,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": USAGE_IN + USAGE_OUT,
    }
    yield _sse(
        {
            "type": "response.completed",
            "response": {**base, "status": "completed", "output": [item], "usage": usage},
        },
        "response.completed",
    )


_EVENTS = {"chat": _chat_events, "anthropic": _anthropic_events, "responses": _responses_events}


def _whole(api: str, step: Step, model: str) -> dict[str, Any]:
    """A non-streaming answer (some clients ask for one, e.g. for a title)."""
    text = str(step.get("text", ""))
    if api == "anthropic":
        if "tool" in step:
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": _id("toolu"),
                    "name": step["tool"],
                    "input": step.get("args", {}),
                }
            ]
        else:
            content = [{"type": "text", "text": text}]
        return {
            "id": _id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if "tool" in step else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT},
        }
    if api == "responses":
        return {
            "id": _id("resp"),
            "object": "response",
            "status": "completed",
            "model": model,
            "output": [_responses_item(step)],
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT},
        }
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = "stop"
    if "tool" in step:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": _id("call"),
                    "type": "function",
                    "function": {
                        "name": step["tool"],
                        "arguments": json.dumps(step.get("args", {})),
                    },
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": _id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": USAGE_IN,
            "completion_tokens": USAGE_OUT,
            "total_tokens": USAGE_IN + USAGE_OUT,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", type=Path, help="JSON list of steps")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, help="append one JSON line per request here")
    args = parser.parse_args()
    script = json.loads(args.script.read_text()) if args.script else []
    fake = FakeModel(script, port=args.port, log_path=args.log).start()
    print(f"fake model listening on {fake.url} (OpenAI/Responses base {fake.url}/v1)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
