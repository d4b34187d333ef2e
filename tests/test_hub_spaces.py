"""Spaces on a live hub: static and gradio Spaces created with the real `huggingface_hub`, served from origins
of their own, the gradio app run in a sandboxed process and called with the real `gradio_client`.

Gradio starts slowly (seconds), so the module runs one gradio app process, restarted once for a new commit.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest
from huggingface_hub import HfApi, constants

HUB_OPTIONS = {"run_spaces": True, "spaces_idle": 60.0}
# An app that starts in a blink (the hub runs any `app.py` of a gradio Space): what the sandbox lets it see.
PROBE = '''import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Probe(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"mark": "MARK", "pid": os.getpid(), "cwd": os.getcwd(), "env": sorted(os.environ),
                           "secret_visible": os.path.exists("DATA/secret"), "cookie": self.headers.get("Cookie"),
                           "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(os.environ["GRADIO_SERVER_PORT"])), Probe).serve_forever()
'''
ECHO = '''import gradio as gr

gr.Interface(lambda text: text.upper() + "!", "text", "text", api_name="shout").launch()
'''


@pytest.fixture(scope="module")
def api(live):
    mp = pytest.MonkeyPatch()
    mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
    mp.setattr(constants, "ENDPOINT", live.url)
    mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", live.url + "/{repo_id}/resolve/{revision}/{filename}")
    import huggingface_hub.hf_api

    # gradio_client asks huggingface_hub's module-level API (made at import, from HF_ENDPOINT) for the host.
    mp.setattr(huggingface_hub.hf_api.api, "endpoint", live.url)
    yield HfApi(endpoint=live.url, token=live.token("sam"))
    mp.undo()
    live.hub.spaces.close()


def get(url: str, **headers) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_static_space_on_its_own_origin(live, api, tmp_path):
    api.create_repo("sam/site", repo_type="space", space_sdk="static")
    (tmp_path / "index.html").write_text("<h1>hello from a space</h1><script src='app.js'></script>")
    (tmp_path / "app.js").write_text("document.title = 'script ran';")
    api.upload_folder(repo_id="sam/site", repo_type="space", folder_path=tmp_path)
    info = api.space_info("sam/site")
    assert info.sdk == "static" and info.runtime.stage == "RUNNING"
    assert info.host.startswith("http://localhost:") and info.host != live.url  # another site than the pages
    status, headers, body = get(info.host + "/")
    assert status == 200 and b"hello from a space" in body and headers["content-type"].startswith("text/html")
    assert get(info.host + "/app.js")[1]["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert get(info.host + "/missing.css")[0] == 404 and get(info.host + "/a//b.html")[0] == 404
    status, headers, page = live.request("GET", "/spaces/sam/site", headers={"Accept": "text/html"})
    assert status == 200 and f'<iframe class="space" src="{info.host}/"' in page.decode()
    assert f"frame-src {info.host};" in headers["content-security-policy"]
    # The pages still run no script; a repo file from the pages' origin is still never a page.
    assert "script-src" not in headers["content-security-policy"]
    assert live.request("GET", "/spaces/sam/site/resolve/main/index.html")[1]["content-disposition"].startswith(
        "attachment")
    with pytest.raises(Exception, match="space_sdk"):
        api.create_repo("sam/odd", repo_type="space", space_sdk="docker")

    # A private Space: no entry without a token or the signed link its page frames; the link sets a cookie.
    api.create_repo("sam/hidden", repo_type="space", space_sdk="static", private=True)
    api.upload_file(path_or_fileobj=b"secret page", path_in_repo="index.html", repo_id="sam/hidden",
                    repo_type="space")
    host = api.space_info("sam/hidden").host
    assert get(host + "/")[0] == 404
    assert get(host + "/", Authorization=f"Bearer {api.token}")[2] == b"secret page"
    page = live.request("GET", "/spaces/sam/hidden", token=api.token, headers={"Accept": "text/html"})[2].decode()
    src = page.split('<iframe class="space" src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    status, headers, body = get(src)
    assert status == 200 and body == b"secret page" and "zupu_space=" in headers["set-cookie"]
    assert get(host + "/", Cookie=headers["set-cookie"].split(";")[0])[2] == b"secret page"
    assert get(host + "/?__sign=9999999999.forged")[0] == 404
    api.delete_repo("sam/hidden", repo_type="space")  # its listener closes with it
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(host + "/", timeout=10)


def test_space_apps_run_sandboxed_restart_on_commit_and_stop_when_idle(live, api):
    api.create_repo("sam/probe", repo_type="space", space_sdk="gradio")
    app = PROBE.replace("DATA", str(live.hub.data))
    api.upload_file(path_or_fileobj=app.encode(), path_in_repo="app.py", repo_id="sam/probe", repo_type="space")
    host = api.space_info("sam/probe").host
    status, _, body = get(host + "/x", Authorization=f"Bearer {api.token}",
                          Cookie=f"zupu_token={api.token}; theirs=1")
    seen = json.loads(body)
    assert status == 200 and seen["mark"] == "MARK"
    # The hub's secret (and its data folder: repos, database) is not there for the app; nor are tokens.
    space = live.hub.spaces.space(live.hub.find_repo(live.hub.caller(f"Bearer {api.token}"), "space", "sam/probe"))
    if "NOT sandboxed" in space.logs():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run Spaces sandboxed: {space.logs()}")
        pytest.skip("no user namespaces and not root here: the hub cannot sandbox a Space's app")
    assert (live.hub.data / "secret").exists() and not seen["secret_visible"]
    assert not any(k.startswith(("HF_TOKEN", "ZUPU", "AWS", "DATABASE")) for k in seen["env"])
    assert seen["authorization"] is None and seen["cookie"] == "theirs=1"
    assert not seen["cwd"].startswith(str(live.hub.data))
    # A new commit restarts it on that commit.
    api.upload_file(path_or_fileobj=app.replace("MARK", "NEW").encode(), path_in_repo="app.py", repo_id="sam/probe",
                    repo_type="space")
    time.sleep(2.1)  # the head of main is re-read every 2 s
    again = json.loads(get(host + "/")[2])
    assert again["mark"] == "NEW" and again["pid"] != seen["pid"]
    # Idle: stopped (its log says so), woken by the next request.
    live.hub.spaces.idle = 0.3
    deadline = time.monotonic() + 10
    while space.app is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    live.hub.spaces.idle = 60.0
    assert space.app is None
    assert json.loads(get(host + "/")[2])["mark"] == "NEW"

    # A crashing app and a hanging one: RUNTIME_ERROR with the reason, in the API and on the page; the hub is fine.
    api.create_repo("sam/crash", repo_type="space", space_sdk="gradio")
    api.upload_file(path_or_fileobj=b"raise SystemExit('no model file')\n", path_in_repo="app.py",
                    repo_id="sam/crash", repo_type="space")
    assert get(api.space_info("sam/crash").host + "/")[0] == 503
    runtime = api.get_space_runtime("sam/crash")
    assert runtime.stage == "RUNTIME_ERROR" and "no model file" in runtime.raw["errorMessage"]
    page = live.request("GET", "/spaces/sam/crash", headers={"Accept": "text/html"})[2].decode()
    assert "RUNTIME_ERROR" in page and "no model file" in page
    from gradio_client import Client

    with pytest.raises(ValueError, match="RUNTIME_ERROR"):
        Client("sam/crash", verbose=False)
    live.hub.spaces.start_timeout = 2.0
    try:
        api.create_repo("sam/hang", repo_type="space", space_sdk="gradio")
        api.upload_file(path_or_fileobj=b"import time\ntime.sleep(600)\n", path_in_repo="app.py",
                        repo_id="sam/hang", repo_type="space")
        t0 = time.monotonic()
        assert get(api.space_info("sam/hang").host + "/")[0] == 503
        assert time.monotonic() - t0 < 15
        assert "did not answer" in api.get_space_runtime("sam/hang").raw["errorMessage"]
    finally:
        live.hub.spaces.start_timeout = 120.0
    assert live.request("GET", "/api/spaces/sam/probe")[0] == 200 and json.loads(get(host + "/")[2])["mark"] == "NEW"


def test_gradio_client_calls_a_gradio_space_through_the_hub(live, api, tmp_path):
    from gradio_client import Client

    api.create_repo("sam/echo", repo_type="space", space_sdk="gradio")
    (tmp_path / "app.py").write_text(ECHO)
    api.upload_folder(repo_id="sam/echo", repo_type="space", folder_path=tmp_path)
    client = Client("sam/echo", token=api.token, verbose=False)  # space_info -> host; runtime; then the app
    assert client.predict("hi", api_name="/shout") == "HI!"
    # Its logs are on its page for the Space's members only.
    page = live.request("GET", "/spaces/sam/echo", token=api.token, headers={"Accept": "text/html"})[2].decode()
    assert "Running on local URL" in page and "RUNNING" in page and "sandboxed:" in page
    anon = live.request("GET", "/spaces/sam/echo", headers={"Accept": "text/html"})[2].decode()
    assert "Running on local URL" not in anon and "RUNNING" in anon


def test_zupu_push_space_publishes_a_demo_for_a_gpt_and_a_classifier(live, api, monkeypatch, tmp_path, capsys):
    import runpy

    import numpy as np
    import torch
    from huggingface_hub import snapshot_download

    import zupu
    from zupu.checkpoint import save_model
    from zupu.cli import main
    from zupu.models.vit import PRESETS, ViTForImageClassification
    from zupu.tokenizers.char import CharTokenizer

    monkeypatch.setenv("ZUPU_HUB_URL", live.url)
    monkeypatch.setenv("ZUPU_HUB_TOKEN", api.token)
    torch.manual_seed(0)
    text = "ROMEO: but soft, what light through yonder window breaks?\n"
    tok = CharTokenizer.from_text(text)
    gpt = tmp_path / "gpt-run"
    save_model(zupu.create("gpt", "tiny", vocab_size=tok.vocab_size).eval(), gpt)
    tok.save(gpt)
    (gpt / "resume.safetensors").write_bytes(b"optimizer state stays home")
    vit = tmp_path / "vit-run"
    save_model(ViTForImageClassification(PRESETS["tiny"]).eval(), vit)
    assert main(["push", str(gpt), "sam/gpt-demo", "--space"]) == 0
    assert main(["push", str(vit), "sam/vit-demo", "--space"]) == 0
    files = api.list_repo_files("sam/gpt-demo", repo_type="space")
    assert {"app.py", "README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert "resume.safetensors" not in files
    info = api.space_info("sam/gpt-demo")
    assert info.sdk == "gradio" and info.host.startswith("http://localhost:")

    # The apps work as the Space runs them (from the Space's files, in its folder); the hub's running of a
    # gradio app is tested above, so here each app is imported, not launched.
    for repo, call in (("sam/gpt-demo", lambda g: g["complete"]("RO", 8, 0)),
                       ("sam/vit-demo", lambda g: g["classify"](np.zeros((20, 30, 3), np.uint8)))):
        folder = snapshot_download(repo, repo_type="space", token=api.token, cache_dir=tmp_path / "c")
        monkeypatch.chdir(folder)
        out = call(runpy.run_path(f"{folder}/app.py", run_name="space_app"))
        if repo == "sam/gpt-demo":
            assert isinstance(out, str) and out.startswith("RO") and len(out) > 2
        else:
            assert len(out) == 5 and abs(sum(out.values()) - 1) < 1e-4
    bare = tmp_path / "mlp-run"
    save_model(zupu.create("backprop-mlp", "tiny"), bare)
    assert main(["push", str(bare), "sam/mlp-demo", "--space"]) == 2  # no demo for it: a clear error, no repo
    assert "backprop-mlp is neither" in capsys.readouterr().err
    assert not api.repo_exists("sam/mlp-demo", repo_type="space")


def test_viewer_and_spaces_in_headless_chromium(live, api, tmp_path):
    """Thumbnails in the dataset viewer; a static Space's script and the running gradio app, each in the
    iframe of its page, on its own origin. Runs after the gradio test, whose app is still up."""
    import io

    from browser import CHROMIUM, CHROMIUM_ARGS, browser_or_skip, check_screenshot
    from huggingface_hub import CommitOperationAdd
    from PIL import Image

    sync_playwright = browser_or_skip()
    api.create_repo("sam/pics", repo_type="dataset")
    ops = []
    for i, colour in enumerate([(220, 30, 30), (30, 160, 60), (40, 70, 220)]):
        buf = io.BytesIO()
        Image.new("RGB", (32, 24), colour).save(buf, format="PNG")
        ops.append(CommitOperationAdd(f"train/{'cat' if i % 2 else 'dog'}/{i}.png", buf.getvalue()))
    api.create_commit("sam/pics", ops, repo_type="dataset", commit_message="pictures")
    width, height = 1100, 800
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(30_000)
            page.goto(live.url + "/datasets/sam/pics/viewer/main")
            thumbs = page.locator("img.thumb")
            assert thumbs.count() == 3 and page.locator("section.split h2").first.inner_text().startswith("default")
            assert all(thumbs.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(3))
            check_screenshot(page.screenshot(), tmp_path / "hub-viewer.png", width, height, (0, 150, width, 400))

            page.goto(live.url + "/spaces/sam/site")
            frame = page.frame_locator("iframe.space")
            assert frame.locator("h1").inner_text() == "hello from a space"
            space_frame = page.frames[1]
            space_frame.wait_for_function("document.title === 'script ran'")  # its script runs, on its origin
            assert space_frame.evaluate("location.origin") == api.space_info("sam/site").host
            assert space_frame.evaluate("location.origin") != live.url

            page.goto(live.url + "/spaces/sam/echo")
            app = page.frame_locator("iframe.space")
            app.locator("textarea").first.fill("browser")
            app.get_by_role("button", name="Submit").click()
            app.locator("textarea").nth(1).wait_for()
            for _ in range(150):
                if app.locator("textarea").nth(1).input_value() == "BROWSER!":
                    break
                page.wait_for_timeout(200)
            assert app.locator("textarea").nth(1).input_value() == "BROWSER!"
            check_screenshot(page.screenshot(), tmp_path / "hub-space.png", width, height, (0, 150, width, 500))
        finally:
            browser.close()
    assert not errors, errors
