"""The hub's web pages: routing beside the clients, escaping, sign-in, and a walk through headless Chromium.

The repos are uploaded with the real `huggingface_hub`. The browser test drives Debian's chromium through
Playwright as tests/browser.py says (skipped where either is missing, except under CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, browser_or_skip, check_screenshot
from huggingface_hub import CommitOperationAdd, HfApi, constants
from sqlalchemy import update

from zupu.hub import web
from zupu.hub.db import Token, token_digest

XSS_NAME = "<img src=x onerror=alert(1)>.txt"
README = """---
license: mit
tags:
- zupu
- tiny
library_name: zupu
---
# Tiny web model

A model card with **bold** text, a table and an attack that must stay text:

<script>alert("readme")</script>

| layer | width |
|-------|-------|
| embed | 32    |

[config](config.json) and [evil](javascript:alert(1))
"""
WEIGHTS = bytes(range(256)) * 1200  # 307,200 bytes; *.safetensors goes to LFS
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def hub_repos(live):
    constants.HF_HUB_DISABLE_XET = True
    token = live.token("alice")
    api = HfApi(endpoint=live.url, token=token)
    api.create_repo("alice/tiny-web")
    api.create_commit("alice/tiny-web", [
        CommitOperationAdd("README.md", README.encode()),
        CommitOperationAdd("config.json", b'{"model_type": "gpt2", "n_embd": 32}\n'),
        CommitOperationAdd("model.safetensors", WEIGHTS),
        CommitOperationAdd("sub/notes.txt", b"notes\n"),
    ], commit_message="add the model")
    api.create_commit("alice/tiny-web", [CommitOperationAdd(XSS_NAME, b"x\n")],
                      commit_message='<script>alert("commit")</script> a hostile message')
    api.create_branch("alice/tiny-web", branch="dev")
    api.create_repo("alice/secret-model", private=True)
    api.upload_file(path_or_fileobj=b"# Secret card\n", path_in_repo="README.md", repo_id="alice/secret-model")
    api.create_repo("alice/tiny-data", repo_type="dataset")
    return {"alice": token, "bob": live.token("bob")}


def get(live, path, **kw):
    status, headers, body = live.request("GET", path, **kw)
    return status, headers, body.decode("utf-8", errors="replace")


def test_sizes_and_front_matter():
    assert [web.human_size(n) for n in (0, 999, 1000, 307_200, 2_500_000, 5 * 10**9)] == [
        "0 Bytes", "999 Bytes", "1 kB", "307 kB", "2.5 MB", "5 GB"]
    meta, error, body = web.split_front_matter("---\nlicense: mit\ntags: [a, b]\n---\n# Hi\n")
    assert meta == {"license": "mit", "tags": ["a", "b"]} and error is None and body == "# Hi\n"
    assert web.split_front_matter("---\n: [\n---\nbody")[1].startswith("the YAML front matter does not parse")
    assert web.split_front_matter("# no front matter\n---\n") == (None, None, "# no front matter\n---\n")


def test_clients_and_pages_share_urls_without_clashing(live, hub_repos, tmp_path):
    """git, huggingface_hub and a browser ask for the same repo paths and each reaches its own handler."""
    for suffix in ("", ".git"):
        status, headers, _ = live.request("GET", f"/alice/tiny-web{suffix}/info/refs?service=git-upload-pack")
        assert status == 200 and headers["content-type"] == "application/x-git-upload-pack-advertisement"
        if shutil.which("git"):
            refs = subprocess.run(["git", "ls-remote", f"{live.url}/alice/tiny-web{suffix}"], capture_output=True,
                                  text=True, timeout=60, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
            assert refs.returncode == 0 and "refs/heads/main" in refs.stdout, refs.stderr
    status, headers, body = live.request("GET", "/alice/tiny-web/resolve/main/model.safetensors", headers=HTML)
    assert status == 200 and body == WEIGHTS and headers["content-type"] == "application/octet-stream"
    status, _, body = get(live, "/api/models/alice/tiny-web")
    assert status == 200 and '"rfilename":"model.safetensors"' in body.replace(" ", "")

    for path in ("/", "/models", "/datasets", "/spaces", "/alice", "/alice/tiny-web", "/alice/tiny-web/tree/main",
                 "/alice/tiny-web/tree/main/sub", "/alice/tiny-web/blob/main/config.json",
                 "/alice/tiny-web/commits/main", "/datasets/alice/tiny-data", "/datasets/alice/tiny-data/tree/main"):
        status, headers, body = get(live, path, headers=HTML)
        assert status == 200 and headers["content-type"].startswith("text/html"), (path, status, body[:300])
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script runs
    assert live.request("GET", "/alice/tiny-web.git", headers=HTML)[0] == 302
    for path in ("/", "/models", "/-/style.css", "/alice/tiny-web"):
        assert live.request("HEAD", path, headers=HTML)[0] == 200, path
    status, _, body = get(live, "/alice/tiny-web/tree/dev/sub", headers=HTML)  # the branch switcher's target
    assert status == 200 and 'href="/alice/tiny-web/tree/main/sub">main</a>' in body and "notes.txt" in body

    # Missing things: an HTML page for a browser, the API's JSON error (and codes) for any other client.
    status, headers, body = get(live, "/alice/nothing-here", headers=HTML)
    assert status == 404 and headers["content-type"].startswith("text/html") and "<h1" in body
    status, headers, body = get(live, "/alice/nothing-here")
    assert status == 404 and headers["x-error-code"] == "RepoNotFound" and body.startswith("{")
    status, headers, _ = get(live, "/alice/tiny-web/resolve/main/missing.bin")
    assert status == 404 and headers["x-error-code"] == "EntryNotFound"
    status, headers, body = get(live, "/alice/tiny-web/tree/no-such-branch", headers=HTML)
    assert status == 404 and headers["x-error-code"] == "RevisionNotFound" and "text/html" in headers["content-type"]
    assert get(live, "/alice/tiny-web/nonsense/main", headers=HTML)[0] == 404
    assert get(live, "/nobody-at-all", headers=HTML)[0] == 404
    assert live.request("POST", "/alice/tiny-web")[0] == 404


def test_nothing_from_a_repo_becomes_markup(live, hub_repos):
    pages = {p: get(live, p, headers=HTML)[2] for p in (
        "/alice/tiny-web", "/alice/tiny-web/tree/main", "/alice/tiny-web/commits/main",
        "/alice/tiny-web/blob/main/README.md", "/alice/tiny-web/blob/main/" + XSS_NAME.replace(" ", "%20"))}
    for path, body in pages.items():
        assert "<script" not in body and "<img src=x" not in body and "href=\"javascript:" not in body, path
    card = pages["/alice/tiny-web"]
    assert '<h1>Tiny web model</h1>' in card and "&lt;script&gt;alert(&quot;readme&quot;)&lt;/script&gt;" in card
    assert "<table" in card and "<td>embed</td>" in card
    assert '<th>license</th><td>mit</td>' in card and '<th>tags</th><td>zupu, tiny</td>' in card
    assert "library_name: zupu" not in card  # the front matter is a table, not text
    assert 'href="/alice/tiny-web/blob/main/config.json"' in card  # relative links open the file's page
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in pages["/alice/tiny-web/tree/main"]
    assert "&lt;script&gt;alert(&#34;commit&#34;)&lt;/script&gt; a hostile message" in \
        pages["/alice/tiny-web/commits/main"]


def test_private_repos_need_a_token_cookie(live, hub_repos):
    assert get(live, "/alice/secret-model", headers=HTML)[0] == 404
    assert "alice/secret-model" not in get(live, "/", headers=HTML)[2]
    assert get(live, "/alice/secret-model/resolve/main/README.md")[0] == 404

    status, headers, body = get(live, "/login", headers=HTML)
    assert status == 200 and 'type="password"' in body
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": live.url}
    status, headers, _ = live.request("POST", "/login", f"token={hub_repos['alice']}&next=/alice/secret-model".encode(),
                                      headers=form)
    assert status == 303 and headers["location"] == "/alice/secret-model"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0], **HTML}
    status, _, body = get(live, "/alice/secret-model", headers=jar)
    assert status == 200 and "<h1>Secret card</h1>" in body and ">alice</a>" in body
    assert "alice/secret-model" in get(live, "/", headers=jar)[2]
    status, _, body = live.request("GET", "/alice/secret-model/resolve/main/README.md", headers=jar)
    assert status == 200 and body == b"# Secret card\n"

    # Someone else's token sees nothing; a bad token, a foreign page or a dangerous `next` are refused.
    bob = {"Authorization": f"Bearer {hub_repos['bob']}", **HTML}
    assert get(live, "/alice/secret-model", headers=bob)[0] == 404
    assert live.request("POST", "/login", b"token=zupu_wrong", headers=form)[0] == 401
    assert live.request("POST", "/login", f"token={hub_repos['alice']}".encode(),
                        headers={**form, "Origin": "http://evil.example"})[0] == 403
    status, headers, _ = live.request("POST", "/login", f"token={hub_repos['alice']}&next=//evil.example/".encode(),
                                      headers=form)
    assert status == 303 and headers["location"] == "/"
    status, headers, _ = live.request("POST", "/logout", headers={"Cookie": jar["Cookie"], "Origin": live.url})
    assert status == 303 and 'zupu_token=""' in headers["set-cookie"] and "Max-Age=0" in headers["set-cookie"]

    # A revoked token signs its cookie out: the page shows as to anyone, and the cookie is deleted.
    token = live.token("alice")
    jar = {"Cookie": f"{web.COOKIE}={token}", **HTML}
    assert get(live, "/alice/secret-model", headers=jar)[0] == 200
    with live.hub.sessions() as s, s.begin():
        s.execute(update(Token).values(revoked=True).where(Token.digest == token_digest(token)))
    status, headers, _ = get(live, "/alice/secret-model", headers=jar)
    assert status == 404 and 'zupu_token=""' in headers["set-cookie"]
    assert get(live, "/alice/secret-model/resolve/main/README.md", headers=jar)[0] == 404


# --- the browser -------------------------------------------------------------------------------------------
def test_browse_in_headless_chromium(live, hub_repos, tmp_path):
    sync_playwright = browser_or_skip()
    width, height = 1100, 760
    dialogs, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(15_000)

            page.goto(live.url + "/")
            assert page.locator("a.repo", has_text="alice/tiny-web").count() == 1
            assert page.locator("a.repo", has_text="alice/secret-model").count() == 0
            check_screenshot(page.screenshot(), tmp_path / "hub-home.png", width, height, (0, 0, width, 200))

            page.fill("header input[name=search]", "tiny-data")
            page.press("header input[name=search]", "Enter")
            page.wait_for_url("**/?search=tiny-data")
            assert [a.inner_text() for a in page.locator("a.repo").all()] == ["alice/tiny-data"]

            page.goto(live.url + "/models")
            page.click("a.repo:has-text('alice/tiny-web')")
            page.wait_for_url(f"{live.url}/alice/tiny-web")
            assert page.locator(".markdown h1").inner_text() == "Tiny web model"
            assert page.locator("table.meta th", has_text="license").count() == 1
            assert page.locator("script").count() == 0 and page.locator("img[src=x]").count() == 0
            box = page.locator("article.card").bounding_box()
            card = (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(min(box["y"] + 300, height)))
            check_screenshot(page.screenshot(), tmp_path / "hub-model-card.png", width, height, card)

            page.click("nav.tabs >> text=Files and versions")
            page.wait_for_url("**/alice/tiny-web/tree/main")
            row = page.locator("tr.file", has=page.locator("a.file", has_text="model.safetensors"))
            assert row.locator("td.num").inner_text() == "307 kB"
            assert row.locator("td.num").get_attribute("title") == f"{len(WEIGHTS)} bytes"
            assert row.locator(".badge.lfs").count() == 1
            assert page.locator("a.file", has_text=XSS_NAME).count() == 1  # the name shows as text
            assert page.locator("a.dir", has_text="sub/").count() == 1
            check_screenshot(page.screenshot(), tmp_path / "hub-files.png", width, height, (0, 150, width, 400))

            page.click("a.file:has-text('config.json')")
            assert '"n_embd": 32' in page.locator("pre.preview").inner_text()
            page.go_back()
            with page.expect_download() as dl:
                row.locator("a.download").click()
            saved = tmp_path / "downloaded.safetensors"
            dl.value.save_as(saved)
            assert dl.value.suggested_filename == "model.safetensors" and saved.read_bytes() == WEIGHTS

            page.click("nav.tabs >> text=Commits")
            page.wait_for_url("**/alice/tiny-web/commits/main")
            titles = [t.inner_text() for t in page.locator("ol.commits a.title").all()]
            assert titles == ['<script>alert("commit")</script> a hostile message', "add the model",
                              "initial commit"]
            check_screenshot(page.screenshot(), tmp_path / "hub-commits.png", width, height, (0, 150, width, 400))

            page.goto(live.url + "/alice/secret-model")
            assert page.locator("h1.error").inner_text() == "404"
            page.click("text=sign in with a token")
            page.fill("#token", hub_repos["alice"])
            page.click("form.login button")
            page.wait_for_url(f"{live.url}/alice/secret-model")
            assert page.locator(".markdown h1").inner_text() == "Secret card"
            assert page.locator("header a.me").inner_text() == "alice"
            cookie = next(c for c in context.cookies() if c["name"] == web.COOKIE)
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert page.evaluate("document.cookie") == ""  # the token is out of any script's reach
            page.goto(live.url + "/")
            assert page.locator("a.repo", has_text="alice/secret-model").count() == 1
            page.click("text=Sign out")
            page.wait_for_url(live.url + "/")
            assert page.locator("a.repo", has_text="alice/secret-model").count() == 0
        finally:
            browser.close()
    assert dialogs == [] and errors == []
