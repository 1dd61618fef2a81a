"""Reviewers for the review page tests without a browser: Flask's test client, or real HTTP on loopback."""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

from epm_spark.io.schemas import RATIONALES

KEY = list(RATIONALES.key)


def hidden_fields(page: str, form_id: str | None = None) -> dict[str, str]:
    """The hidden inputs of the first form (or of form ``form_id``) on ``page``."""
    if form_id is not None:
        page = page[page.index(f'id="{form_id}"'):]
    form = page[: page.index("</form>")]
    return {html.unescape(n): html.unescape(v)
            for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)}


def token(page: str) -> str:
    return html.unescape(re.search(r'name="csrf" value="([^"]+)"', page).group(1))


def shown_pair(page: str) -> dict[str, str] | None:
    """The rationale key of the pair a pairs page shows (None: the queue is empty for this reviewer)."""
    if 'id="verdict"' not in page:
        return None
    fields = hidden_fields(page, "verdict")
    return {k: fields[k] for k in KEY}


def left_count(page: str) -> int:
    return int(re.search(r'id="progress"><strong>(\d+)</strong> left', page).group(1))


class TestClientReviewer:
    """One reviewer's session through Flask's test client."""

    __test__ = False

    def __init__(self, app, name: str):
        self.client = app.test_client()
        self.name = name
        login = self.client.get("/login").get_data(as_text=True)
        response = self.client.post("/login", data={"csrf": token(login), "reviewer": name})
        assert response.status_code == 303, response.get_data(as_text=True)[:300]
        # Logging in issues a new token; the login form (no side effects) shows it.
        self.csrf = token(self.get("/login")[1])

    def get(self, path: str) -> tuple[int, str]:
        r = self.client.get(path)
        return r.status_code, r.get_data(as_text=True)

    def post(self, path: str, data: dict[str, str], *, with_token: bool = True) -> tuple[int, str]:
        if with_token:
            data = {"csrf": self.csrf, **data}
        r = self.client.post(path, data=data)
        return r.status_code, r.get_data(as_text=True)

    def decide(self, pair: dict[str, str], verdict: str, note: str = "") -> tuple[int, str]:
        return self.post("/pairs/verdict", {**pair, "verdict": verdict, "note": note})


class _Keep3xx(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class HttpReviewer:
    """One reviewer's session over real HTTP (its own cookie jar), for concurrent reviewers."""

    def __init__(self, base: str, name: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _Keep3xx)
        self.name = name
        status, _ = self.post("/login", {"csrf": token(self.get("/login")[1]), "reviewer": name})
        assert status == 303
        self.csrf = token(self.get("/login")[1])

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        data = {"csrf": getattr(self, "csrf", ""), **data}
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(self.base + path, data=body, method="POST"))

    def decide(self, pair: dict[str, str], verdict: str, note: str = "") -> tuple[int, str]:
        return self.post("/pairs/verdict", {**pair, "verdict": verdict, "note": note})
