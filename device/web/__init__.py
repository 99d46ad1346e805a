"""The device's browser pages, served from this package with nothing fetched from anywhere else.

    GET /                 the demo page: upload or draw a digit, POST it to /classify?spikes=true and show
                          the answer (static/index.html, app.js, style.css under /web/)
    GET /docs, /redoc     Swagger UI and ReDoc on the JS and CSS that the fastapi-offline package ships,
                          served under /docs-assets/ instead of FastAPI's default CDN URLs (ReDoc's bundle
                          without the CDN URL of its logo)

Everything works on a machine with no Internet access: no CDN, no web fonts.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
PAGE_ASSETS_URL = "/web"
# The Swagger UI / ReDoc bundles inside the fastapi-offline wheel (a dependency, so no vendored copy here).
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
REDOC_BUNDLE = "redoc.standalone.js"
# ReDoc's bundle loads Redocly's logo, beside its "API docs by Redocly" link, from their CDN. An image with an
# empty source fails at once, with no request, and ReDoc then drops it (its onError): the link stays, as text.
REDOC_CDN_LOGO, NO_LOGO = '"https://cdn.redoc.ly/redoc/logo-mini.svg"', '""'
# index.html carries this attribute; the page shows its API key field when it reads "true".
API_KEY_MARK = 'data-api-key-required="false"'


def add_web_page(app: FastAPI, api_key_required: bool) -> None:
    """``GET /`` and its assets under /web/; the page asks for an API key when ``api_key_required``."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if page.count(API_KEY_MARK) != 1:  # a damaged install: without the mark the key field could never show
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} must carry {API_KEY_MARK} exactly once")
    if api_key_required:
        page = page.replace(API_KEY_MARK, API_KEY_MARK.replace("false", "true"))
    app.mount(PAGE_ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="web")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)


def add_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Swagger UI and ReDoc from local assets; ``app`` must be built with ``docs_url=None, redoc_url=None``."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None, redoc_url=None: FastAPI's own docs load from a CDN")
    redoc_bundle = (DOCS_ASSETS_DIR / REDOC_BUNDLE).read_bytes().replace(REDOC_CDN_LOGO.encode(), NO_LOGO.encode())

    # before the mount, which would otherwise answer for every path under it
    @app.get(f"{DOCS_ASSETS_URL}/{REDOC_BUNDLE}", include_in_schema=False)
    async def offline_redoc_bundle() -> Response:
        return Response(redoc_bundle, media_type="text/javascript")

    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

    def assets(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{DOCS_ASSETS_URL}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets(request)}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets(request)}/swagger-ui.css",
            swagger_favicon_url=f"{assets(request)}/favicon.png",
            # no badge that sends the schema to the public online validator
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets(request)}/{REDOC_BUNDLE}",
            redoc_favicon_url=f"{assets(request)}/favicon.png",
            with_google_fonts=False,
        )
