"""zupu serve, tested with the real `openai` client against a live server on 127.0.0.1: SmolLM2's real
tokenizer and chat template, a small random Llama over its vocabulary (the API, not the model, is tested):
log-probabilities equal log_softmax of zupu's own logits, a client that goes away mid-stream stops its
generation, and concurrent clients each get the answer they would get alone."""

import dataclasses
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from reference import need

from zupu.apps.serve import create_app
from zupu.models.llama import PRESETS, Llama

openai = need("openai")
uvicorn = need("uvicorn")
NAME = "smollm2-test"


@pytest.fixture(scope="module")
def served(smollm2_tokenizer):
    """(the app, the model it serves, an openai client talking to it)."""
    torch.manual_seed(0)
    # a window wide enough that a long reply outlasts a client that leaves early
    model = Llama(dataclasses.replace(PRESETS["tiny"], vocab_size=49152, max_position_embeddings=4096)).eval()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, smollm2_tokenizer, NAME)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield app, model, openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(served):
    return served[2]


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_models_chat_and_completions(client):
    assert [m.id for m in client.models.list()] == [NAME]
    r = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=5, temperature=0, n=2)
    assert len(r.choices) == 2 and r.choices[0].message.content == r.choices[1].message.content  # greedy
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 10
    assert r.usage.prompt_tokens == 18 and r.usage.total_tokens == 18 + r.usage.completion_tokens
    r = client.completions.create(model=NAME, prompt="Once upon a time", max_tokens=6, temperature=0.9, seed=3)
    again = client.completions.create(model=NAME, prompt="Once upon a time", max_tokens=6, temperature=0.9, seed=3)
    assert r.choices[0].text == again.choices[0].text and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6


def test_streaming_gives_the_same_text_as_a_whole_reply(client):
    whole = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, temperature=0,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_concurrent_requests_are_never_mixed(client):
    prompts = ["The", "Once upon a time", "Hello", "In the beginning", "A cat", "Why is the sky"]

    def ask(k):  # a distinct prompt and seed each; every other client streams
        kw = {"model": NAME, "max_tokens": 6, "temperature": 1.0, "seed": k}
        if k % 2:
            chunks = client.completions.create(prompt=prompts[k], stream=True, **kw)
            return "".join(c.choices[0].text for c in chunks if c.choices)
        return client.completions.create(prompt=prompts[k], **kw).choices[0].text
    alone = [ask(k) for k in range(len(prompts))]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, range(len(prompts))))
    assert together == alone and len(set(alone)) == len(alone)


def reference_logprobs(model, tokenizer, prompt, n):
    """Greedy tokens of `prompt` and log_softmax of zupu's logits for each, from one forward over the whole."""
    ids = tokenizer.encode(prompt)
    new = [int(t[0]) for t in model.generate(torch.tensor([ids]), n, temperature=0)]
    with torch.no_grad():
        logp = model(torch.tensor([ids + new]))[0, len(ids) - 1:-1].log_softmax(-1)  # (n, V)
    return new, logp


def test_logprobs_equal_log_softmax_of_the_logits(served, smollm2_tokenizer):
    app, model, client = served
    tok = smollm2_tokenizer
    r = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    new, logp = reference_logprobs(model, tok, tok.apply_chat_template(MESSAGES, True), 6)
    content = r.choices[0].logprobs.content
    assert [c.token for c in content] == [tok.decode([t]) for t in new][:len(content)] and len(content) >= 1
    for c, t, row in zip(content, new, logp, strict=False):
        assert c.logprob == pytest.approx(row[t].item(), abs=1e-4)
        assert c.top_logprobs[0].token == c.token and len(c.top_logprobs) == 3  # greedy: the likeliest
        assert [x.logprob for x in c.top_logprobs] == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)
        assert bytes(c.bytes) == tok.token_bytes(t)
    # streamed, the same log-probabilities arrive chunk by chunk
    chunks = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True)
    streamed = [x for c in chunks if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.content]
    assert [(x.token, x.logprob) for x in streamed] == [(x.token, x.logprob) for x in content]
    # completions: the legacy shape
    r = client.completions.create(model=NAME, prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=2)
    new, logp = reference_logprobs(model, tok, "Once upon a time", 5)
    lp = r.choices[0].logprobs
    assert lp.tokens == [tok.decode([t]) for t in new]
    assert lp.token_logprobs == pytest.approx([row[t].item() for t, row in zip(new, logp, strict=True)], abs=1e-4)
    assert [len(d) for d in lp.top_logprobs] == [2] * 5 and lp.text_offset[0] == len("Once upon a time")
    assert client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=2).choices[0].logprobs is None


def test_a_client_that_disconnects_stops_its_generation(served):
    app, _, client = served
    server = app.state.server
    before = server.generated
    stream = client.completions.create(model=NAME, prompt="The", max_tokens=3000, temperature=1.0, seed=0,
                                       stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.time() + 20
    while server.lock.locked() and time.time() < deadline:  # the generation ends: stopped, or all 3000 tokens
        time.sleep(0.05)
    assert not server.lock.locked()
    assert server.generated - before < 1000, server.generated - before
    r = client.completions.create(model=NAME, prompt="The", max_tokens=3, temperature=0)  # the server goes on
    assert r.usage.completion_tokens == 3


@pytest.mark.parametrize("kw,param", [
    ({"model": "gpt-4"}, "model"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, "messages"),
    ({"temperature": 5}, "temperature"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
])
def test_bad_requests_are_400_with_openai_error_objects(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**{"model": NAME, "messages": MESSAGES, "max_tokens": 4, **kw})
    assert e.value.status_code == 400 and e.value.body["param"] == param and e.value.body["message"]
