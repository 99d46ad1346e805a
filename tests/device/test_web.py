"""The device's web page and docs are served from the device itself: no CDN, no external URL, offline-ready.

Over HTTP to the in-process app (no edge needed); the page in a real browser is tested in
tests/integration/test_web_page.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port
from tests.stack import device_client, upload

# An absolute or protocol-relative URL: scheme://host or //host (a JS comment is "// " with a space).
URL = re.compile(r"""(?:\b[a-z][a-z0-9+.-]*:)?//[A-Za-z0-9_.\[\]-]+""")
API_KEY = "page-test-key"


class References(HTMLParser):
    """Every src= and href= of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


def external_urls(text: str) -> list[str]:
    return URL.findall(text)


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[httpx.Client]:
    with device_client(checkpoint, f"127.0.0.1:{free_port()}") as client:
        yield client


def test_the_page_and_its_assets_reference_no_other_host(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="pad"' in page.text and 'id="file"' in page.text  # the drawing pad and the upload
    assets = [a for a in references(page.text) if not a.startswith("data:")]  # the empty favicon: no request
    assert {"web/app.js", "web/style.css", "docs"} <= set(assets)
    for text, name in [(page.text, "/")] + [(client.get(urljoin("/", a)).text, a) for a in assets]:
        assert external_urls(text) == [], f"{name} refers to another host"
    for asset in assets:
        assert not urlsplit(asset).scheme and not urlsplit(asset).netloc, asset
        response = client.get(urljoin("/", asset))
        assert response.status_code == 200 and response.content, asset
    assert client.get("/web/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/web/style.css").headers["content-type"].startswith("text/css")
    assert "@import" not in client.get("/web/style.css").text


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_load_their_js_and_css_from_the_device(client: httpx.Client, path: str) -> None:
    docs = client.get(path)
    assert docs.status_code == 200
    assert "http://" not in docs.text and "https://" not in docs.text  # no CDN, no fonts, no validator
    assets = references(docs.text)
    assert any(a.endswith(".js") for a in assets) and (path == "/redoc" or any(a.endswith(".css") for a in assets))
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert client.get("/openapi.json").status_code == 200


def test_the_spikes_parameter_is_documented(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    parameters = {p["name"] for p in schema["paths"]["/classify"]["post"]["parameters"]}
    assert {"logits", "spikes"} <= parameters
    raster = schema["components"]["schemas"]["SpikeRaster"]["properties"]
    assert set(raster) == {"shape", "bits"} and "packbits" in raster["bits"]["description"]
    assert {"float32_feature_bytes", "image_bytes"} <= set(
        schema["components"]["schemas"]["Classification"]["required"]
    )


def test_the_page_asks_for_the_api_key_only_when_one_is_set(client: httpx.Client, checkpoint: Path) -> None:
    assert 'data-api-key-required="false"' in client.get("/").text
    with device_client(checkpoint, f"127.0.0.1:{free_port()}", api_key=API_KEY) as keyed:
        page = keyed.get("/")  # the page, its assets and the docs stay open ...
        assert page.status_code == 200 and 'data-api-key-required="true"' in page.text
        assert keyed.get("/web/app.js").status_code == 200 and keyed.get("/docs").status_code == 200
        assert keyed.post("/classify", files=upload(synthetic_png())).status_code == 401  # ... classifying does not
    assert "X-API-Key" in client.get("/web/app.js").text
