"""`zupu serve MODEL --host H --port P`: an OpenAI-compatible API over a zupu chat model.

    GET  /v1/models                 the one model served, under its MODEL name
    POST /v1/chat/completions       messages -> the model's chat template -> a reply
    POST /v1/completions            a prompt continued as plain text

Request fields: model, max_tokens (chat: also max_completion_tokens), temperature, top_p, stop (a string or
a list), seed, n, stream (server-sent events, `data: {...}` chunks and `data: [DONE]`). Responses carry
`usage` (prompt, completion and total tokens) and each choice's `finish_reason`: "stop" (end of turn or a
stop string) or "length" (max_tokens reached). A bad request (unknown model, a role other than system,
user or assistant, max_tokens < 1, a prompt that leaves no room in the context window, a malformed field)
is a 400 with OpenAI's error object `{"error": {"message", "type", "param", "code"}}`.

One model, one generation at a time: requests queue on a lock, so concurrent requests never share a KV
cache or a random generator. A streaming client that disconnects stops its generation at the next token.
Token log-probabilities (`logprobs`) are not served: a request asking for them is a 400 that says so.
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


class Counting:
    """Wraps a model's `generate` to count the tokens it streams and note whether the last ended the turn."""

    def __init__(self, model: Any, eos: int | None, stop: threading.Event):
        self.model, self.eos, self.stop = model, eos, stop
        self.config = model.config
        self.tokens, self.ended = 0, False

    def generate(self, *args: Any, **kw: Any) -> Iterator[Any]:
        for token in self.model.generate(*args, **kw):
            if self.stop.is_set():  # the client went away
                return
            self.tokens += 1
            self.ended = self.eos is not None and int(token[0]) == self.eos
            yield token


class Server:
    def __init__(self, model: Any, tokenizer: Any, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.created = int(time.time())
        self.lock = threading.Lock()  # one generation at a time: queued, never interleaved

    # -- requests --------------------------------------------------------------------------------------

    def options(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        if body.get("model") != self.name:
            raise BadRequest(f"The model {body.get('model')!r} does not exist; this server serves {self.name!r}",
                             "model", "model_not_found")
        if body.get("logprobs") or body.get("top_logprobs"):
            raise BadRequest("logprobs are not supported by this server", "logprobs")
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
        for param, ok, want in checks:
            if not ok:
                raise BadRequest(f"Invalid value for '{param}': expected {want}", param)
        return {"max_tokens": max_tokens, "temperature": float(body.get("temperature", 1.0)),
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
               counter: list[Counting]) -> Iterator[str]:
        """Text pieces of choice k (its seed is seed + k); `counter` receives the Counting wrapper."""
        from zupu.sampling import stream_text

        counting = Counting(self.model, self.tokenizer.eos_token_id, stop)
        counter.append(counting)
        seed = None if o["seed"] is None else o["seed"] + k
        yield from stream_text(counting, self.tokenizer, prompt, o["max_tokens"], o["temperature"], None,
                               o["top_p"] if o["top_p"] < 1 else None, o["stop"], seed,
                               eos_token_id=self.tokenizer.eos_token_id)

    @staticmethod
    def finish_reason(counting: Counting, max_tokens: int) -> str:
        return "length" if counting.tokens >= max_tokens and not counting.ended else "stop"

    def complete(self, prompt: str, o: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
        """All n choices at once: [(text, finish_reason)], completion tokens."""
        out, used = [], 0
        with self.lock:
            for k in range(o["n"]):
                counter: list[Counting] = []
                text = "".join(self.pieces(prompt, o, k, threading.Event(), counter))
                out.append((text, self.finish_reason(counter[0], o["max_tokens"])))
                used += counter[0].tokens
        return out, used


def create_app(model: Any, tokenizer: Any, name: str) -> Any:
    """The FastAPI app serving `model` under `name`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    server = Server(model, tokenizer, name)
    app = FastAPI(title=f"zupu serve {name}")

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
            choices, used = await asyncio.to_thread(server.complete, prompt, o)
            return {**head, "object": kind, "choices": [
                {"index": k, "finish_reason": why, "logprobs": None,
                 **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
                for k, (text, why) in enumerate(choices)],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used}}
        return StreamingResponse(stream(request, prompt, o, head, chat, n_prompt), media_type="text/event-stream")

    async def stream(request: Request, prompt: str, o: dict[str, Any], head: dict[str, Any], chat: bool,
                     n_prompt: int) -> AsyncIterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(k: int, text: str | None, why: str | None, first: bool = False) -> str:
            if chat:
                delta = ({"role": "assistant", "content": ""} if first else {} if text is None else {"content": text})
                choice = {"index": k, "delta": delta, "finish_reason": why, "logprobs": None}
            else:
                choice = {"index": k, "text": text or "", "finish_reason": why, "logprobs": None}
            return f"data: {json.dumps({**head, 'object': kind, 'choices': [choice]})}\n\n"

        stop = threading.Event()
        used = 0
        await asyncio.to_thread(server.lock.acquire)
        try:
            for k in range(o["n"]):
                counter: list[Counting] = []
                it = server.pieces(prompt, o, k, stop, counter)
                if chat:
                    yield chunk(k, None, None, first=True)
                while True:
                    piece = await asyncio.to_thread(next, it, None)
                    if piece is None:
                        break
                    if await request.is_disconnected():
                        stop.set()
                        return
                    yield chunk(k, piece, None)
                used += counter[0].tokens
                yield chunk(k, None, server.finish_reason(counter[0], o["max_tokens"]))
            usage = {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used}
            yield f"data: {json.dumps({**head, 'object': kind, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            stop.set()
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

    model, tokenizer = load_chat_model(args.model)
    print(f"serving {args.model} at http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(create_app(model, tokenizer, args.model), host=args.host, port=args.port, log_level="warning")
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("serve", help="serve a chat model over an OpenAI-compatible HTTP API")
    s.add_argument("model", help="a .gguf file, a weights-registry name (smollm2) or a folder with a chat template")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(func=cmd_serve)
