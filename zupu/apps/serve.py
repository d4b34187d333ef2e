"""`zupu serve MODEL --host H --port P`: an OpenAI-compatible API over a zupu chat model.

    GET  /v1/models                 the one model served, under its MODEL name
    POST /v1/chat/completions       messages -> the model's chat template -> a reply
    POST /v1/completions            a prompt continued as plain text

Request fields: model, max_tokens (chat: also max_completion_tokens), temperature, top_p, stop (a string or
a list), seed, n, stream (server-sent events, `data: {...}` chunks and `data: [DONE]`), and log-probabilities
in OpenAI's two shapes: chat's `logprobs: true` + `top_logprobs: 0-20` (`{"content": [{"token", "logprob",
"bytes", "top_logprobs"}]}`), completions' `logprobs: 0-5` (`{"tokens", "token_logprobs", "top_logprobs",
"text_offset"}`). They are the model's own, log_softmax of its logits (temperature 1, before top_p), for every
token generated but the end of turn (a stop string's tokens included). Responses carry
`usage` (prompt, completion and total tokens) and each choice's `finish_reason`: "stop" (end of turn or a
stop string) or "length" (max_tokens reached). A bad request (unknown model, a role other than system,
user or assistant, max_tokens < 1, a prompt that leaves no room in the context window, a malformed field)
is a 400 with OpenAI's error object `{"error": {"message", "type", "param", "code"}}`.

One model, one generation at a time: requests queue on a lock, so concurrent requests never share a KV
cache or a random generator. A streaming client that disconnects stops its generation at the next token, and
the lock passes on only once that token is done.
"""

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


class Generation:
    """One choice being generated. It stands in for the model in `zupu.sampling.generate`, so it sees each
    step's logits (the tokens' log-probabilities); it counts the tokens, notes whether the last ended the turn,
    and stops when `stop` is set (the client went away)."""

    def __init__(self, server: "Server", stop: threading.Event, top: int | None):
        self.server, self.model, self.stop, self.top = server, server.model, stop, top  # top None: no logprobs
        self.config = self.model.config
        self.eos = server.tokenizer.eos_token_id
        self.tokens, self.ended = 0, False
        self.logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []  # (token, logprob, its top k)
        self.last: Any = None

    def __call__(self, *args: Any, **kw: Any) -> Any:  # the model's forward, as generate calls it
        logits = self.model(*args, **kw)
        self.last = logits[:, -1]  # (1, V)
        return logits

    def new_caches(self, max_len: int) -> Any:
        return self.model.new_caches(max_len)

    def modules(self) -> Iterator[Any]:
        return self.model.modules()

    def generate(self, input_ids: Any, max_new_tokens: int, **kw: Any) -> Iterator[Any]:
        from zupu.sampling import generate

        for token in generate(self, input_ids, max_new_tokens, **kw):
            if self.stop.is_set():
                return
            t = int(token[0])
            self.tokens += 1
            self.server.generated += 1
            self.ended = self.eos is not None and t == self.eos
            if self.top is not None and not self.ended:
                logp = self.last[0].float().log_softmax(-1)  # (V,)
                best = logp.topk(self.top) if self.top else None
                self.logprobs.append((t, logp[t].item(), [] if best is None else
                                      list(zip(best.indices.tolist(), best.values.tolist(), strict=True))))
            yield token


class Server:
    def __init__(self, model: Any, tokenizer: Any, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.created = int(time.time())
        self.lock = threading.Lock()  # one generation at a time: queued, never interleaved
        self.generated = 0  # tokens generated since the start (a client that goes away stops adding to it)

    # -- requests --------------------------------------------------------------------------------------

    def options(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        if body.get("model") != self.name:
            raise BadRequest(f"The model {body.get('model')!r} does not exist; this server serves {self.name!r}",
                             "model", "model_not_found")
        max_tokens = body.get("max_completion_tokens") if chat else None
        max_tokens = max_tokens if max_tokens is not None else body.get("max_tokens", 256 if chat else 16)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        checks = [
            ("max_tokens", isinstance(max_tokens, int) and max_tokens >= 1, "an integer >= 1"),
            ("temperature", isinstance(body.get("temperature", 1.0), int | float)
             and 0 <= body.get("temperature", 1.0) <= 2, "a number between 0 and 2"),
            ("top_p", isinstance(body.get("top_p", 1.0), int | float) and 0 < body.get("top_p", 1.0) <= 1,
             "a number in (0, 1]"),
            ("n", isinstance(body.get("n", 1), int) and 1 <= body.get("n", 1) <= 16, "an integer from 1 to 16"),
            ("seed", body.get("seed") is None or isinstance(body.get("seed"), int), "an integer"),
            ("stop", isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop),
             "a string or a list of up to 4 strings"),
        ]
        logprobs, top = body.get("logprobs"), body.get("top_logprobs")
        if chat:
            checks += [("logprobs", logprobs is None or isinstance(logprobs, bool), "true or false"),
                       ("top_logprobs", top is None or (isinstance(top, int) and 0 <= top <= 20 and logprobs is True),
                        "an integer from 0 to 20, with logprobs true")]
        else:
            checks.append(("logprobs", logprobs is None or (isinstance(logprobs, int) and not isinstance(logprobs, bool)
                                                            and 0 <= logprobs <= 5), "an integer from 0 to 5"))
        for param, ok, want in checks:
            if not ok:
                raise BadRequest(f"Invalid value for '{param}': expected {want}", param)
        return {"top": ((top or 0) if logprobs else None) if chat else logprobs,  # None: no log-probabilities
                "max_tokens": max_tokens, "temperature": float(body.get("temperature", 1.0)),
                "top_p": float(body.get("top_p", 1.0)), "n": body.get("n", 1), "seed": body.get("seed"),
                "stop": stop, "stream": bool(body.get("stream", False))}

    def prompt(self, body: dict[str, Any], chat: bool, max_tokens: int) -> tuple[str, int]:
        from zupu.tokenizers.char import TokenizerError

        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("'messages' must be a non-empty list", "messages")
            try:
                text = self.tokenizer.apply_chat_template(
                    [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
                     for m in messages], True)
            except TokenizerError as e:
                raise BadRequest(str(e), "messages") from None
        else:
            text = body.get("prompt")
            if not isinstance(text, str) or not text:
                raise BadRequest("'prompt' must be a non-empty string", "prompt")
        n_prompt = len(self.tokenizer.encode(text))
        window = self.model.config.n_positions
        if n_prompt + max_tokens > window:
            raise BadRequest(f"This model's maximum context length is {window} tokens; the prompt takes {n_prompt} "
                             f"and max_tokens asks for {max_tokens} more", "messages" if chat else "prompt",
                             "context_length_exceeded")
        return text, n_prompt

    # -- generation ------------------------------------------------------------------------------------

    def pieces(self, prompt: str, o: dict[str, Any], k: int, stop: threading.Event,
               started: list[Generation]) -> Iterator[str]:
        """Text pieces of choice k (its seed is seed + k); `started` receives its Generation."""
        from zupu.sampling import stream_text

        generation = Generation(self, stop, o["top"])
        started.append(generation)
        seed = None if o["seed"] is None else o["seed"] + k
        yield from stream_text(generation, self.tokenizer, prompt, o["max_tokens"], o["temperature"], None,
                               o["top_p"] if o["top_p"] < 1 else None, o["stop"], seed,
                               eos_token_id=self.tokenizer.eos_token_id)

    @staticmethod
    def finish_reason(generation: Generation, max_tokens: int) -> str:
        return "length" if generation.tokens >= max_tokens and not generation.ended else "stop"

    def complete(self, prompt: str, o: dict[str, Any]) -> list[tuple[str, Generation]]:
        """All n choices at once: [(text, its Generation)]."""
        out = []
        with self.lock:
            for k in range(o["n"]):
                started: list[Generation] = []
                out.append(("".join(self.pieces(prompt, o, k, threading.Event(), started)), started[0]))
        return out

    # -- log-probabilities in OpenAI's shapes --------------------------------------------------------------

    def token(self, t: int) -> tuple[str, bytes]:
        text = self.tokenizer.decode([t])
        return text, self.tokenizer.token_bytes(t) if hasattr(self.tokenizer, "token_bytes") else text.encode()

    def chat_logprobs(self, entries: list[tuple[int, float, list[tuple[int, float]]]]) -> dict[str, Any]:
        def one(t: int, lp: float) -> dict[str, Any]:
            text, raw = self.token(t)
            return {"token": text, "logprob": lp, "bytes": list(raw)}

        return {"content": [{**one(t, lp), "top_logprobs": [one(i, v) for i, v in top]} for t, lp, top in entries],
                "refusal": None}

    def completion_logprobs(self, entries: list[tuple[int, float, list[tuple[int, float]]]], offset: int,
                            top: int) -> dict[str, Any]:
        tokens = [self.token(t)[0] for t, _, _ in entries]
        offsets = [offset + sum(map(len, tokens[:i])) for i in range(len(tokens))]
        return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [{self.token(i)[0]: v for i, v in best} for _, _, best in entries] if top else None,
                "text_offset": offsets}


def create_app(model: Any, tokenizer: Any, name: str) -> Any:
    """The FastAPI app serving `model` under `name`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    server = Server(model, tokenizer, name)
    app = FastAPI(title=f"zupu serve {name}")
    app.state.server = server

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error", "param": e.param,
                                       "code": e.code}}, status_code=400)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": server.created,
                                            "owned_by": "zupu"}]}

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"The request body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        return body

    async def handle(request: Request, chat: bool) -> Any:
        body = await body_of(request)
        o = server.options(body, chat)
        prompt, n_prompt = server.prompt(body, chat, o["max_tokens"])
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": rid, "created": int(time.time()), "model": name}
        if not o["stream"]:
            choices = await asyncio.to_thread(server.complete, prompt, o)
            used = sum(g.tokens for _, g in choices)
            return {**head, "object": kind, "choices": [
                {"index": k, "finish_reason": server.finish_reason(g, o["max_tokens"]),
                 "logprobs": logprobs(g.logprobs, o, chat, len(prompt)),
                 **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
                for k, (text, g) in enumerate(choices)],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used}}
        return StreamingResponse(stream(request, prompt, o, head, chat, n_prompt), media_type="text/event-stream")

    def logprobs(entries: list[Any], o: dict[str, Any], chat: bool, offset: int) -> dict[str, Any] | None:
        if o["top"] is None:
            return None
        return server.chat_logprobs(entries) if chat else server.completion_logprobs(entries, offset, o["top"])

    async def stream(request: Request, prompt: str, o: dict[str, Any], head: dict[str, Any], chat: bool,
                     n_prompt: int) -> AsyncIterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(k: int, text: str | None, why: str | None, entries: list[Any], offset: int = 0,
                  first: bool = False) -> str:
            lp = logprobs(entries, o, chat, offset) if entries else None
            if chat:
                delta = ({"role": "assistant", "content": ""} if first else {} if text is None else {"content": text})
                choice = {"index": k, "delta": delta, "finish_reason": why, "logprobs": lp}
            else:
                choice = {"index": k, "text": text or "", "finish_reason": why, "logprobs": lp}
            return f"data: {json.dumps({**head, 'object': kind, 'choices': [choice]})}\n\n"

        stop = threading.Event()
        used = 0
        await asyncio.to_thread(server.lock.acquire)
        pending: asyncio.Future | None = None
        try:
            for k in range(o["n"]):
                started: list[Generation] = []
                it = server.pieces(prompt, o, k, stop, started)
                sent, offset = 0, len(prompt)  # log-probabilities sent so far; where the next piece starts
                if chat:
                    yield chunk(k, None, None, [], first=True)
                while True:
                    # shielded: if this stream is cancelled, the token being computed still finishes, and the
                    # lock passes on after it (below), so two generations never run on the model at once
                    pending = asyncio.ensure_future(asyncio.to_thread(next, it, None))
                    piece = await asyncio.shield(pending)
                    if piece is None:
                        break
                    if await request.is_disconnected():
                        return
                    entries = started[0].logprobs[sent:]
                    sent += len(entries)
                    yield chunk(k, piece, None, entries, offset)
                    offset += len(piece)
                g = started[0]
                used += g.tokens
                yield chunk(k, None, server.finish_reason(g, o["max_tokens"]), g.logprobs[sent:], offset)
            usage = {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used}
            yield f"data: {json.dumps({**head, 'object': kind, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            stop.set()
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _: server.lock.release())
            else:
                server.lock.release()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await handle(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, chat=False)

    return app


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from zupu.apps.chat import load_chat_model

    model, tokenizer = load_chat_model(args.model, args.quantize)
    print(f"serving {args.model} at http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(create_app(model, tokenizer, args.model), host=args.host, port=args.port, log_level="warning")
    return 0


def add_parser(subparsers: Any) -> None:
    from zupu.apps.chat import add_quantize

    s = subparsers.add_parser("serve", help="serve a chat model over an OpenAI-compatible HTTP API")
    s.add_argument("model", help="a .gguf file, a weights-registry name (smollm2) or a folder with a chat template")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    add_quantize(s)
    s.set_defaults(func=cmd_serve)
