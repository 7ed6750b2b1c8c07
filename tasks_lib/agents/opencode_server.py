"""The ``opencode-server`` backend: one ``opencode serve`` for many worktrees, driven over HTTP.

Per session: open the SSE event stream for the worktree, create a session, ``prompt_async``,
follow events to ``session.idle`` and judge from the last assistant message. OpenCode never
ends a session by itself on trouble (it retries provider errors for ever, hangs on a stuck
stream, waits for ever on a permission ask), so every exit is ours: wall clock, idle (no
events but heartbeats), a retry cap, cancellation, and an answer to every permission ask.
Facts behind this: shared/research/agent-clis.md.

The agent's tools run inside the server, so a sandbox (``SessionRequest.sandbox``) is the
server's: a sandboxed session gets a server of its own, started in that sandbox and stopped
when the session ends (a few seconds more per session), so the session writes only its own
checkout and every process its tools started ends with it, as with ``opencode run``. One
server shared by sandboxed sessions would have to be allowed every task's checkout and keep
each session's daemons until the run ends. A server you attached (``server_url``) is not
tgflow's to start: its sessions run wherever that server runs, unsandboxed by tgflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from tasks_lib.agents.base import Agent, AgentError, Outcome, SessionRequest, SessionResult
from tasks_lib.agents.cli import QUIET_ENV, error_text, find_cli, provider_of
from tasks_lib.agents.limits import usage_limit
from tasks_lib.agents.opencode import opencode_env, opencode_state_dirs
from tasks_lib.agents.process import kill_group
from tasks_lib.agents.sandbox import Sandbox
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.agents.tally import Tally

LISTENING = re.compile(r"listening on (http://[\w.:\[\]-]+)")
NUDGE = "There was an error, please continue."
START_TIMEOUT_S = 60.0
ABORT_SETTLE_S = 30.0
ABORT_START_S = 10.0  # a prompt sent but not started when it is aborted, at most this long
ABORT_AGAIN_S = 3.0


class OpenCodeServerError(AgentError):
    """``opencode serve`` would not start or answer, or its run is over."""


class OpenCodeServer:
    """A started ``opencode serve`` in its own process group (or an attached URL); with a
    ``sandbox``, started inside it."""

    def __init__(self, settings: AgentSettings, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.url: str | None = settings.server_url
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def ensure(self) -> str:
        with self._lock:
            if self._closed:  # a late node of a cancelled run: start nothing nobody stops
                raise OpenCodeServerError("closed: the run that owned this server has ended")
            if self.exited():  # it died (and failed the session it was serving): start anew
                self._stop()
            if self.url is None:
                self.url = self._start()
            return self.url

    def _start(self) -> str:
        self._home = tempfile.TemporaryDirectory(prefix="tgflow-opencode-serve-")
        home = Path(self._home.name)
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            **QUIET_ENV,
            **opencode_env(self.settings, self.settings.model, home),
            **self.settings.extra_env,
        }
        argv = [find_cli("opencode"), "serve", "--hostname", "127.0.0.1", "--port", "0"]
        argv += ["--print-logs", "--log-level", "WARN"]
        if self.sandbox is not None:
            env.update(self.sandbox.env())
            argv = self.sandbox.wrap(argv, home, opencode_state_dirs(env))
        self.proc = subprocess.Popen(
            argv,
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        found: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(found,), daemon=True).start()
        try:
            url = found.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            url = None
        if url is None:
            self._stop()
            tail = "\n".join(self.output[-20:])
            raise OpenCodeServerError(
                f"opencode serve did not start within {START_TIMEOUT_S:g} s:\n{tail}"
            )
        self._wait_healthy(url)
        return url

    def _pump(self, found: queue.Queue[str | None]) -> None:
        """Read the server's output for ever (a full pipe would block it); report the URL."""
        assert self.proc is not None and self.proc.stdout is not None
        announced = False
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            del self.output[:-200]
            if not announced and (m := LISTENING.search(line)):
                announced = True
                found.put(m.group(1))
        if not announced:
            found.put(None)

    def _wait_healthy(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/global/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.2)
        self._stop()
        raise OpenCodeServerError(f"opencode serve at {url} never answered /global/health")

    @property
    def closed(self) -> bool:
        return self._closed

    def exited(self) -> bool:
        """Whether the server we started has died (an attached one is not ours to watch)."""
        proc = self.proc
        return proc is not None and proc.poll() is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()

    def _stop(self) -> None:
        """Stop the server we started and remove its home; the caller holds ``_lock``."""
        if self.proc is not None:
            kill_group(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self.proc = None
            self.url = self.settings.server_url
        if self._home is not None:
            self._home.cleanup()
            self._home = None


@dataclass
class _Session:
    """One session's state while we follow its events."""

    id: str
    tally: Tally = field(default_factory=Tally)
    log: list[str] = field(default_factory=list)
    failed_tools: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)  # subagent sessions (the task tool) under it
    retry_message: str = ""
    busy: bool = False  # went busy since our last prompt: only then does idle mean done
    idle: bool = False


def _session_of(props: dict[str, Any]) -> str | None:
    for holder in (props, props.get("info") or {}, props.get("part") or {}):
        if isinstance(holder, dict) and holder.get("sessionID"):
            return str(holder["sessionID"])
    return None


class OpenCodeServerAgent(Agent):
    """Sessions on one shared server; thread-safe, so nodes can run side by side.

    The agent's tools run in the server's environment, so ``SessionRequest.env`` cannot reach
    them; environment for tools goes in ``AgentSettings.extra_env`` (set when the server starts).
    """

    name = "opencode-server"
    takes_messages = True

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.model = settings.model
        self.provider = provider_of(settings, "opencode")
        self.server = OpenCodeServer(settings)
        self._own_servers: set[OpenCodeServer] = set()  # the sandboxed sessions' servers
        self._lock = threading.Lock()

    def close(self) -> None:
        self.server.close()
        with self._lock:
            for server in self._own_servers:
                server.close()

    def _server_for(self, request: SessionRequest) -> OpenCodeServer:
        """The shared server, or for a sandboxed session a server of its own in its sandbox
        (``close`` stops it too, so a cancelled run leaves none)."""
        if request.sandbox is None or self.settings.server_url is not None:
            return self.server
        server = OpenCodeServer(self.settings, request.sandbox)
        with self._lock:
            if self.server.closed:
                return self.server  # refuses to start: the session fails saying why
            self._own_servers.add(server)
        return server

    def _release(self, server: OpenCodeServer) -> None:
        if server is self.server:
            return
        server.close()
        with self._lock:
            self._own_servers.discard(server)

    def __enter__(self) -> OpenCodeServerAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, request: SessionRequest) -> SessionResult:
        started = time.monotonic()
        session = _Session(id="")
        server = self._server_for(request)
        try:
            outcome, reason = self._run(server, request, session, started)
        except (AgentError, ValueError, httpx.HTTPError) as e:
            outcome, reason = Outcome.FAILED, f"{self.name}: {e}"
        finally:
            self._release(server)
        tally = session.tally
        if tally.anomaly():
            self._say(session, request, f"tgflow: {tally.anomaly()}")
        return SessionResult(
            outcome=outcome,
            reason=reason,
            log=session.log,
            duration_s=time.monotonic() - started,
            tokens_in=tally.tokens_in,
            tokens_out=tally.tokens_out,
            cost_usd=tally.cost_usd,
            tool_errors=tally.tool_errors,
            limit=replace(tally.limit, provider=self.provider or self.name)
            if tally.limit
            else None,
        )

    def _run(
        self, server: OpenCodeServer, request: SessionRequest, session: _Session, started: float
    ) -> tuple[Outcome, str]:
        url = server.ensure()
        params = {"directory": str(request.worktree.resolve())}
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        connected = threading.Event()
        with (
            httpx.Client(base_url=url, params=params, timeout=30) as api,
            httpx.Client(
                base_url=url, params=params, timeout=httpx.Timeout(30, read=None)
            ) as stream,
        ):
            threading.Thread(target=_follow, args=(stream, events, connected), daemon=True).start()
            if not connected.wait(30):
                raise OpenCodeServerError(f"no event stream from opencode serve at {url}")
            created = api.post("/session", json={"title": request.task_id})
            created.raise_for_status()
            session.id = created.json()["id"]
            try:
                with request.inbox.receiving():
                    self._prompt(api, session, request, request.prompt)
                    outcome, reason = self._follow_session(
                        api, session, events, request, started, server=server
                    )
            except BaseException:
                self._abort(api, session)  # never leave a session running behind us
                raise
            finally:
                for text in request.inbox.take():
                    self._say(
                        session, request, f"tgflow: not delivered (the session ended): {text}"
                    )
            stream.close()  # ends the reader thread
            self._read_messages(api, session)
        return (outcome, reason) if outcome is not None else session.tally.verdict(self.name)

    def _prompt(
        self, api: httpx.Client, session: _Session, request: SessionRequest, text: str
    ) -> None:
        session.busy = session.idle = False
        api.post(
            f"/session/{session.id}/prompt_async", json=self._body(request, text)
        ).raise_for_status()

    def _body(self, request: SessionRequest, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"parts": [{"type": "text", "text": text}]}
        if request.model:
            provider, _, model = request.model.rpartition("/")
            if self.settings.base_url or not provider:
                provider = "tgflow"
            body["model"] = {"providerID": provider, "modelID": model}
        return body

    def _follow_session(
        self,
        api: httpx.Client,
        session: _Session,
        events: queue.Queue[dict[str, Any]],
        request: SessionRequest,
        started: float,
        *,
        server: OpenCodeServer | None = None,
    ) -> tuple[Outcome | None, str]:
        """Follow events until idle; ``(None, "")`` means judge from the messages. ``server``
        is the one serving the session (a sandboxed session's own), by default the shared one."""
        server = server or self.server
        timeout_s = self.settings.timeout_s or request.timeout_s
        idle_s = self.settings.idle_timeout_s or request.idle_timeout_s
        last_event = time.monotonic()
        nudged = recovering = False
        while True:
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                event = None
            now = time.monotonic()
            for text in request.inbox.take():
                self._tell(api, session, request, text)
            if request.cancel.is_set():
                self._abort(api, session)
                return Outcome.CANCELLED, "cancelled"
            if now - started > timeout_s:
                self._abort(api, session)
                return Outcome.TIMED_OUT, f"{self.name}: no result within {timeout_s:g} s"
            if event is None:
                if server.exited():
                    tail = "\n".join(server.output[-10:])
                    return Outcome.FAILED, f"opencode serve exited during the session:\n{tail}"
                if now - last_event > idle_s:
                    if nudged:
                        self._abort(api, session)
                        reason = f"no events for {idle_s:g} s, also after a follow-up prompt"
                        return Outcome.STALLED, f"{self.name}: {reason}"
                    # Recovery first, as a person would: stop the stuck turn, say continue.
                    self._say(session, request, f"tgflow: stalled {idle_s:g} s; nudging")
                    nudged = recovering = True
                    with contextlib.suppress(httpx.HTTPError):
                        api.post(f"/session/{session.id}/abort")
                    last_event = now
                continue
            if event.get("type") == "server.error":
                return Outcome.FAILED, f"opencode server error: {error_text(event)}"
            kind, props = str(event.get("type") or ""), event.get("properties") or {}
            parent = (props.get("info") or {}).get("parentID")
            if kind == "session.created" and parent in {session.id, *session.children}:
                session.children.add(str(props["info"]["id"]))
            owner = _session_of(props)
            if owner == session.id:
                self._handle(api, session, kind, props, request)
            elif owner in session.children or (owner is None and kind == "permission.asked"):
                # A subagent at work is no stall; its permission ask would hang us too.
                if kind == "permission.asked":
                    self._handle(api, session, kind, props, request)
            else:
                continue
            last_event = now
            if session.idle:
                if not recovering:
                    return None, ""
                recovering = False
                session.tally.error = None  # the abort we caused
                self._prompt(api, session, request, NUDGE)
                self._say(session, request, f"tgflow: sent follow-up prompt: {NUDGE}")
            if session.tally.limit is not None:  # it would wait for the reset, holding us
                self._abort(api, session)
                return Outcome.LIMITED, (
                    f"usage limit of {self.provider}: {session.tally.limit.message}"
                )
            if session.tally.provider_retries > self.settings.max_provider_retries:
                self._abort(api, session)
                return Outcome.FAILED, (
                    f"provider error, retried {session.tally.provider_retries}x: "
                    f"{session.retry_message}"
                )

    def _tell(
        self, api: httpx.Client, session: _Session, request: SessionRequest, text: str
    ) -> None:
        """A person's message, into the running session: OpenCode queues a prompt that
        arrives while the session is busy and the model reads it in its next request. One
        that cannot be posted is said in the log; it does not end the agent's session."""
        try:
            api.post(
                f"/session/{session.id}/prompt_async", json=self._body(request, text)
            ).raise_for_status()
        except httpx.HTTPError as e:
            self._say(session, request, f"tgflow: not delivered ({e}): {text}")
            return
        self._say(session, request, f"tgflow: a person's message sent into the session: {text}")

    def _handle(
        self,
        api: httpx.Client,
        session: _Session,
        kind: str,
        props: dict[str, Any],
        request: SessionRequest,
    ) -> None:
        tally = session.tally
        if kind == "session.idle":
            session.idle = session.busy
        elif kind == "session.status":
            status = props.get("status") or {}
            session.busy = session.busy or status.get("type") == "busy"
            if status.get("type") == "retry":
                tally.provider_retries += 1
                session.retry_message = str(status.get("message", ""))
                tally.limit = tally.limit or usage_limit(session.retry_message)
                self._say(
                    session,
                    request,
                    f"provider retry {status.get('attempt')}: {session.retry_message}",
                )
        elif kind == "session.error":
            tally.error = f"opencode: {error_text(props.get('error'))}"
            self._say(session, request, tally.error)
        elif kind == "permission.asked":
            reply = self.settings.permission
            api.post(f"/permission/{props['id']}/reply", json={"reply": reply})
            what = f"{props.get('permission')} {props.get('patterns') or ''}".strip()
            if reply == "reject":
                tally.denied.append(what)
            self._say(session, request, f"tgflow: permission {what}: answered {reply}")
        elif kind == "message.part.updated":
            part = props.get("part") or {}
            state = part.get("state") or {}
            if part.get("type") == "tool" and state.get("status") in ("completed", "error"):
                if state["status"] == "error" and part.get("id") not in session.failed_tools:
                    session.failed_tools.add(str(part.get("id")))
                    tally.tool_errors += 1
                detail = state.get("title") or state.get("error") or ""
                self._say(session, request, f"tool {part.get('tool')} {state['status']}: {detail}")
            elif part.get("type") == "text" and (part.get("time") or {}).get("end"):
                for line in str(part.get("text", "")).splitlines():
                    self._say(session, request, line)

    @staticmethod
    def _say(session: _Session, request: SessionRequest, line: str) -> None:
        session.log.append(line)
        request.on_line(line)

    def _abort(self, api: httpx.Client, session: _Session) -> None:
        """Abort and wait (briefly) until the server no longer counts the session busy: one left
        running would go on editing a worktree that is about to be cleaned or reused. The
        server's status, not the idle event, is the test: under load the event can come first.
        A prompt just sent may not have started yet (the server lists no status for it, and
        an abort then does nothing): until the session was seen busy, idle proves nothing for
        ``ABORT_START_S``. A session busy again is asked to abort again."""
        now = time.monotonic()
        deadline, start_by = now + ABORT_SETTLE_S, now + ABORT_START_S
        seen_busy, asked = session.busy, -ABORT_AGAIN_S
        while now < deadline:
            if now - asked >= ABORT_AGAIN_S:
                asked = now
                with contextlib.suppress(httpx.HTTPError):
                    api.post(f"/session/{session.id}/abort")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status = api.get("/session/status").json().get(session.id) or {}
                if status.get("type", "idle") != "idle":
                    if not seen_busy:  # it started after the abort: abort it now
                        seen_busy, asked = True, -ABORT_AGAIN_S
                elif seen_busy or now >= start_by:
                    return
            time.sleep(0.2)
            now = time.monotonic()
        session.log.append(f"the server still counts session {session.id} busy after its abort")

    def _read_messages(self, api: httpx.Client, session: _Session) -> None:
        """Tokens, cost and the verdict from the stored messages (the source of truth)."""
        try:
            response = api.get(f"/session/{session.id}/message")
            response.raise_for_status()
            messages = response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            session.tally.error = session.tally.error or f"could not read the session: {e}"
            return
        tally = session.tally
        last: dict[str, Any] | None = None
        for message in messages:
            info = message.get("info") or {}
            if info.get("role") != "assistant":
                continue
            last = info
            tokens = info.get("tokens") or {}
            tally.add_usage(tokens.get("input"), tokens.get("output"), info.get("cost"))
        if last is None:
            tally.error = tally.error or "opencode: no answer from the model"
        elif last.get("error"):
            tally.error = f"opencode: {error_text(last['error'])}"
        else:
            tally.finished = last.get("finish") == "stop"
            if not tally.finished:
                tally.error = tally.error or f"opencode: last turn ended with {last.get('finish')}"


def _follow(
    client: httpx.Client, events: queue.Queue[dict[str, Any]], connected: threading.Event
) -> None:
    """Read the SSE stream into ``events`` until the client is closed.

    Closing the client from the session's thread is how this ends, and what that raises here
    depends on where the read was; any of it just ends the thread.
    """
    with contextlib.suppress(Exception), connect_sse(client, "GET", "/event") as source:
        for sse in source.iter_sse():
            try:
                event = json.loads(sse.data)
            except json.JSONDecodeError:
                continue
            if event.get("type") == "server.connected":
                connected.set()
            elif event.get("type") != "server.heartbeat":
                events.put(event)
