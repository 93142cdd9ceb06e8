"""The verifier child process (`shard verifier`): loads the model, serves the engine on 127.0.0.1.

It binds a free port first and announces it (READY_PREFIX + JSON on stdout), so the node can show
load progress from /health while the weights load. A model that cannot load ends the process with
EXIT_MODEL_UNUSABLE and a one-line reason, so the supervisor stops retrying. It exits when its
stdin closes: a node killed outright leaves no verifier behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import llama_cpp
from aiohttp import web
from llama_cpp import _internals

from shard import errors
from shard.verifier import protocol
from shard.verifier.embed import Embedder, EmbedError
from shard.verifier.engine import Engine, EngineError, ExternalDraft, Job
from shard.verifier.jsonschema import SchemaError
from shard.verifier.lookup import PromptLookup
from shard.verifier.model import Model, ModelOptions, default_threads
from shard.verifier.model_file import ModelLoadError, check_gguf_file
from shard.verifier.tools import call_grammar as tool_grammar

log = logging.getLogger("shard.verifier")

STATE: web.AppKey[VerifierState] = web.AppKey("state")
MAX_BODY = 8 * 1024 * 1024


class VerifierState:
    def __init__(self, options: ModelOptions, token: str) -> None:
        self.options = options
        self.token = token
        self.status = "loading"
        self.progress = 0.0
        self.error = ""
        self.model: Model | None = None
        self.engine: Engine | None = None
        self.jobs: dict[int, Job] = {}  # running generations, by id: where /draft delivers
        self.embedder: Embedder | None = None  # made on the first /embed
        self.embed_lock = threading.Lock()


def _error(status: int, message: str, code: str = "invalid_request") -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}, status=status
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path != "/health":
        state = request.app[STATE]
        auth = request.headers.get("Authorization", "")
        given = (
            auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        )  # the token alone, without "Bearer ", is not enough
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), state.token.encode()):
            return _error(401, "missing or wrong verifier token", "unauthorized")
    return await handler(request)


def _ready_engine(request: web.Request) -> Engine:
    state = request.app[STATE]
    if state.engine is None:
        raise web.HTTPServiceUnavailable(
            text=json.dumps(
                {"error": {"message": f"the model is {state.status}", "type": "unavailable", "code": "model_loading"}}
            ),
            content_type="application/json",
        )
    return state.engine


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": {
                        "message": "the body is not valid JSON",
                        "type": "invalid_request_error",
                        "code": "bad_json",
                    }
                }
            ),
            content_type="application/json",
        ) from None


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body: dict[str, Any] = {"status": state.status, "progress": round(state.progress, 3)}
    if state.error:
        body["error"] = state.error
    if state.engine is not None:
        body["load"] = state.engine.load()
    return web.json_response(body)


async def info(request: web.Request) -> web.Response:
    engine = _ready_engine(request)
    return web.json_response(
        {
            **engine.model.info(),
            "counters": engine.counters,
            "load": engine.load(),
            "verify_cost_ms": engine.curve.table(),
        }
    )


async def tokenize(request: web.Request) -> web.Response:
    engine = _ready_engine(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return _error(400, "'text' must be a string")
    special = bool(body.get("special", False))
    return web.json_response(
        {"tokens": engine.model.tokenize(body["text"], add_bos=bool(body.get("add_bos", False)), special=special)}
    )


async def detokenize(request: web.Request) -> web.Response:
    engine = _ready_engine(request)
    body = await _json_body(request)
    try:
        tokens = protocol.token_ids(body if isinstance(body, dict) else {}, "tokens")
    except protocol.ProtocolError as exc:
        return _error(400, str(exc))
    if not all(engine.model.valid_token(t) for t in tokens):
        return _error(400, "token id out of range")
    return web.json_response({"text": engine.model.detokenize(tokens)})


def _prompt(engine: Engine, req: protocol.GenerateRequest) -> tuple[list[int], str]:
    """The prompt's tokens and its text (as a scout must see it to continue it), followed by the
    continuation (text generated elsewhere, tokenized as if this model had produced it)."""
    model = engine.model
    if req.tokens is not None:
        tokens, text = req.tokens, model.detokenize(req.tokens) if req.share_context else ""
    else:
        tools = req.tools if req.tool_choice != "none" else None
        text = model.render_chat(req.messages, tools) if req.messages is not None else req.prompt or ""
        # Chat templates write special tokens as text; a raw prompt is the user's text and stays text.
        tokens = (
            model.fim_prompt(text, req.suffix) if req.suffix else model.tokenize(text, special=req.messages is not None)
        )
    if req.continuation:
        tokens = tokens + model.tokenize_continuation(tokens[-4:], req.continuation)
        text += req.continuation
    return tokens, text


def _sampling(engine: Engine, req: protocol.GenerateRequest) -> protocol.Sampling:
    """The request's sampling; a required or named tool call replaces any grammar with one compiled
    here from the declared tools' schemas (in the format of the model's template)."""
    if not req.tools:
        return req.sampling
    fmt = "hermes" if engine.model.tool_format == "none" else engine.model.tool_format
    try:
        grammar = tool_grammar(req.tools, req.tool_choice, req.parallel_tool_calls, fmt)
    except SchemaError as exc:
        raise ValueError(f"tools: {exc}") from None
    return dataclasses.replace(req.sampling, grammar=grammar) if grammar else req.sampling


def _start_job(request: web.Request, job: Job) -> tuple[Engine, asyncio.Queue[dict[str, Any]]]:
    engine = _ready_engine(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:  # called on the engine's thread
        loop.call_soon_threadsafe(queue.put_nowait, event)

    job.emit = emit
    engine.submit(job)
    return engine, queue


async def generate(request: web.Request) -> web.StreamResponse:
    engine = _ready_engine(request)
    try:
        req = protocol.GenerateRequest.from_dict(await _json_body(request))
        prompt, prompt_text = _prompt(engine, req)
        job = Job(
            prompt=prompt,
            params=_sampling(engine, req),
            emit=lambda e: None,
            max_tokens=req.max_tokens,
            stop=req.stop,
            draft_source=PromptLookup() if req.drafter == "lookup" else None,
            logprobs=req.logprobs,
        )
        engine, queue = _start_job(request, job)
    except (protocol.ProtocolError, EngineError, ValueError) as exc:
        return _error(400, str(exc), exc.code if isinstance(exc, errors.ShardError) else "invalid_request")
    jobs = request.app[STATE].jobs
    jobs[job.id] = job
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    try:
        while True:
            event = await queue.get()
            # Several events may be waiting: write them in one go (one syscall per batch).
            events = [event]
            while not queue.empty():
                events.append(queue.get_nowait())
            if req.share_context:
                for e in events:
                    if e["type"] == "start":
                        e["context_text"], e["context_tokens"] = prompt_text, prompt
            await resp.write(b"".join(json.dumps(e).encode() + b"\n" for e in events))
            if any(e["type"] == "end" for e in events):
                break
    except (asyncio.CancelledError, ConnectionResetError):
        engine.cancel(job)  # the node went away: free the slot at once
        raise
    finally:
        jobs.pop(job.id, None)
        while job.inbox:  # drafts that raced the job's end
            job.inbox.popleft().done(0, 0, "finished")
    return resp


async def draft(request: web.Request) -> web.Response:
    """Hand a draft to a running generation; answer with its verdict once a step has checked it."""
    engine = _ready_engine(request)
    try:
        req = protocol.DraftRequest.from_dict(await _json_body(request))
    except protocol.ProtocolError as exc:
        return _error(400, str(exc))
    job = request.app[STATE].jobs.get(req.job)
    if job is None:
        return web.json_response(protocol.DraftVerdict(0, 0, "finished").to_dict())
    if req.tokens is not None:
        tokens = req.tokens
    else:  # tokenized as it would be after the tokens before its position
        tokens = engine.model.tokenize_continuation(job.tokens[max(0, req.position - 4) : req.position], req.text or "")
    if not tokens or not all(engine.model.valid_token(t) for t in tokens):
        return web.json_response(protocol.DraftVerdict(0, 0, "invalid").to_dict())
    loop = asyncio.get_running_loop()
    verdict: asyncio.Future[protocol.DraftVerdict] = loop.create_future()

    def done(proposed: int, accepted: int, outcome: str) -> None:
        def settle() -> None:
            if not verdict.done():
                verdict.set_result(protocol.DraftVerdict(proposed, accepted, outcome))

        loop.call_soon_threadsafe(settle)

    # Under its sender's name: the engine learns each scout's acceptance across jobs by it.
    # (a stated confidence came with `tokens`, as many: protocol.DraftRequest checked it)
    ext = ExternalDraft(
        req.position, tokens[: protocol.MAX_TOKENS_PER_REQUEST], done, req.limit, req.source, req.confidence
    )
    job.inbox.append(ext)
    if req.job not in request.app[STATE].jobs:  # the job ended while this draft was being queued
        done(0, 0, "finished")
    return web.json_response((await verdict).to_dict())


async def verify(request: web.Request) -> web.Response:
    engine = _ready_engine(request)
    try:
        req = protocol.VerifyRequest.from_dict(await _json_body(request))
        job = Job(prompt=req.context, params=req.sampling, emit=lambda e: None, draft=req.draft, max_steps=1)
        engine, queue = _start_job(request, job)
    except (protocol.ProtocolError, EngineError, ValueError) as exc:
        return _error(400, str(exc))
    end = await _until_end(engine, job, queue)
    if end["type"] == "error":
        return _error(500, end["message"], "engine_error")
    return web.json_response(
        protocol.VerifyResult(accepted=end["tokens"], n_draft_accepted=end["usage"]["draft_accepted"]).to_dict()
    )


async def _until_end(engine: Engine, job: Job, queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    """A one-answer job's last event: its end or its error (a client that leaves cancels the job)."""
    try:
        while True:
            event = await queue.get()
            if event["type"] in ("error", "end"):
                return event
    except asyncio.CancelledError:
        engine.cancel(job)
        raise


async def check(request: web.Request) -> web.Response:
    """Whether a peer's text is one this model could have written for the request (CheckRequest)."""
    engine = _ready_engine(request)
    try:
        req = protocol.CheckRequest.from_dict(await _json_body(request))
        prompt, _ = _prompt(engine, req.generate)
        job = Job(
            prompt=prompt,
            params=_sampling(engine, req.generate),
            emit=lambda e: None,
            max_tokens=req.limit,
            expect=req.expect.encode("utf-8"),
        )
        engine, queue = _start_job(request, job)
    except (protocol.ProtocolError, EngineError, ValueError) as exc:
        return _error(400, str(exc), exc.code if isinstance(exc, errors.ShardError) else "invalid_request")
    end = await _until_end(engine, job, queue)
    if end["type"] == "error":
        return _error(500, end["message"], "engine_error")
    return web.json_response(
        protocol.CheckResult(
            agrees=end["finish_reason"] != "mismatch", checked=end["usage"]["completion_tokens"]
        ).to_dict()
    )


def _embedder(state: VerifierState, engine: Engine) -> Embedder:
    with state.embed_lock:
        if state.embedder is None:
            opts = state.options
            model = engine.model.model
            if opts.embedding_path:  # a separate embedding GGUF, loaded on first use
                check_gguf_file(Path(opts.embedding_path))
                params = llama_cpp.llama_model_default_params()
                params.n_gpu_layers = 0x7FFFFFFF if engine.model.gpu_offload and opts.n_gpu_layers != 0 else 0
                model = _internals.LlamaModel(path_model=opts.embedding_path, params=params, verbose=False)
            n_ctx = min(opts.n_ctx, llama_cpp.llama_model_n_ctx_train(model.model) or opts.n_ctx)
            state.embedder = Embedder(model, n_ctx, opts.n_threads or default_threads())
        return state.embedder


async def embed(request: web.Request) -> web.Response:
    """Embeddings, in a thread: they never wait for (or hold up) the generation loop."""
    engine = _ready_engine(request)
    state = request.app[STATE]
    try:
        req = protocol.EmbedRequest.from_dict(await _json_body(request))
    except protocol.ProtocolError as exc:
        return _error(400, str(exc))

    def run() -> tuple[list[list[float]], int, int]:
        embedder = _embedder(state, engine)
        tokenize = embedder.model.tokenize
        seqs = (
            req.tokens
            if req.tokens is not None
            else [tokenize(t.encode("utf-8"), True, False) for t in req.inputs or []]
        )
        if any(not 0 <= t < embedder.model.n_vocab() for s in seqs for t in s):
            raise EmbedError("token id out of range")
        return [embedder.embed(s).tolist() for s in seqs], sum(map(len, seqs)), embedder.n_embd

    try:
        vectors, n_tokens, dims = await asyncio.get_running_loop().run_in_executor(None, run)
    except (EmbedError, ModelLoadError, ValueError) as exc:
        return _error(400, str(exc))
    return web.json_response({"embeddings": vectors, "prompt_tokens": n_tokens, "dimensions": dims})


def create_app(state: VerifierState) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=MAX_BODY)
    app[STATE] = state
    app.router.add_get("/health", health)
    app.router.add_get("/info", info)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/generate", generate)
    app.router.add_post("/verify", verify)
    app.router.add_post("/check", check)
    app.router.add_post("/draft", draft)
    app.router.add_post("/embed", embed)
    return app


def _load(state: VerifierState) -> None:
    def progress(fraction: float) -> None:
        state.progress = fraction

    try:
        state.model = Model(state.options, progress)
        state.engine = Engine(state.model)
    except (ModelLoadError, ValueError, OSError) as exc:
        state.status, state.error = "failed", str(exc)
        return
    state.status, state.progress = "ok", 1.0


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    try:
        while sys.stdin.buffer.read(1024):
            pass
    except (OSError, ValueError):
        pass
    loop.call_soon_threadsafe(stop.set)


async def serve(options: ModelOptions, host: str = "127.0.0.1", port: int = 0) -> int:
    token = os.environ.get(protocol.TOKEN_ENV, "")
    if not token:
        print(f"error: {protocol.TOKEN_ENV} must hold the per-launch token", file=sys.stderr)
        return 2
    state = VerifierState(options, token)
    runner = web.AppRunner(create_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(protocol.READY_PREFIX + json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if sys.stdin is not None and not sys.stdin.isatty():
        threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    await loop.run_in_executor(None, _load, state)
    if state.status == "failed":
        print(f"error: {state.error}", file=sys.stderr, flush=True)
        await runner.cleanup()
        sys.stdout.flush()
        # Not a normal interpreter shutdown: the stdin watcher thread holds stdin's buffer lock, and
        # shutdown aborts on it ("Fatal Python error: _enter_buffered_busy", SIGABRT), which the
        # supervisor took for a crash: three restarts, and the reason lost behind "exit code -6".
        os._exit(protocol.EXIT_MODEL_UNUSABLE)
    log.info("model loaded: %s", state.model.info() if state.model else "")
    print(f"model ready: {options.path}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if state.engine is not None:
            state.engine.close()
    return 0
