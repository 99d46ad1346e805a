"""The device's web page in a real browser, in front of real ``sbn edge`` and ``sbn device`` processes.

Headless Debian ``chromium`` driven through ``chromedriver`` by selenium: a digit drawn on the
canvas (and then an uploaded file) is classified, and what the page shows is checked against
/classify's own answer for the very bytes the page sent. The device runs with an API key, so the
page's key field is part of every request; a second device, without one, shows the page without it.
Without a chromium or chromedriver binary the browser tests are skipped (`.ci/run` installs both);
the ``spikes=true`` test needs no browser.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.checkpoint import load_checkpoint
from tests.stack import EdgeProcess, device_client, device_process, upload

API_KEY = "web-page-test-key"
HEADERS = {"X-API-Key": API_KEY}
TIMEOUT_S = 60  # generous: the test machine may be busy


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def device_url(checkpoint: Path, edges: dict[int, EdgeProcess]) -> Iterator[str]:
    """A ``sbn device`` process with an API key (from its environment, as documented) on a free port."""
    with device_process(checkpoint, edges[8].address, env={**os.environ, "SBN_DEVICE_API_KEY": API_KEY}) as url:
        yield url


@pytest.fixture(scope="module")
def keyless_device_url(checkpoint: Path, edges: dict[int, EdgeProcess]) -> Iterator[str]:
    """A device without an API key (served in this process, over real HTTP)."""
    with device_client(checkpoint, edges[8].address) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture(scope="module")
def client(device_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=device_url, headers=HEADERS, timeout=30) as client:
        yield client


def unpack(spikes: dict) -> np.ndarray:
    """The ``spikes`` field of a /classify answer -> uint8 array of its shape."""
    packed = np.frombuffer(base64.b64decode(spikes["bits"], validate=True), dtype=np.uint8)
    n = math.prod(spikes["shape"])
    assert len(packed) == math.ceil(n / 8)
    bits = np.unpackbits(packed)
    assert not bits[n:].any(), "the padding of the last byte must be zero"
    return bits[:n].reshape(spikes["shape"])


def test_spikes_true_returns_the_transmitted_binary_tensor(client: httpx.Client, checkpoint: Path) -> None:
    image = synthetic_png(seed=3, size=(40, 40))
    body = client.post("/classify", params={"spikes": "true"}, files=upload(image)).json()
    spikes = unpack(body["spikes"])
    assert list(spikes.shape) == body["spike_shape"] == body["spikes"]["shape"]
    assert set(np.unique(spikes)) <= {0, 1} and spikes.any()
    reference = HeadRunner.load(checkpoint).run(image).spikes[:, 0]  # [T, C', H', W'], in this process
    np.testing.assert_array_equal(spikes, reference.astype(np.uint8))
    assert body["image_bytes"] == len(image)
    assert "spikes" not in client.post("/classify", files=upload(image)).json()  # opt-in only


def _browser_binaries() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    binaries = _browser_binaries()
    if binaries is None:
        pytest.skip("no chromium/chromedriver binary on PATH (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1800",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(flag)
    # every request the browser makes, and its console, for the checks that nothing leaves the device
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # an explicit driver path: selenium never looks for (or downloads) a driver of its own
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=binaries[1]))
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _count(text: str) -> int:
    """'1,234 B' -> 1234"""
    return int(re.sub(r"[^0-9]", "", text))


def _uploaded_bytes(driver) -> bytes:
    """The image the page POSTed last (window.sbnLast.upload), read back through a FileReader."""
    data_url = driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; const reader = new FileReader();"
        "reader.onload = () => done(reader.result); reader.readAsDataURL(window.sbnLast.upload);"
    )
    return base64.b64decode(data_url.split(",", 1)[1])


def _requested_urls(driver) -> list[str]:
    """The URLs the browser requested since the last call (from Chrome's performance log)."""
    events = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def _assert_only_local(urls: list[str], device_url: str) -> None:
    elsewhere = [u for u in urls if not (u.startswith(f"{device_url}/") or u.startswith(("data:", "blob:")))]
    assert not elsewhere, f"the browser fetched from elsewhere than the device: {elsewhere}"


def _wait_for_answer(driver, previous: object = None) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, TIMEOUT_S).until(
        lambda d: (
            d.execute_script("return window.sbnLast && window.sbnLast.result") not in (None, previous)
            or "error" in d.find_element("id", "status").get_attribute("class")
        )
    )
    status = driver.find_element("id", "status")
    assert "error" not in status.get_attribute("class"), f"the page reports an error: {status.text}"
    return driver.execute_script("return window.sbnLast.result")


def _open_page(driver, url: str) -> None:
    """The page at ``url``, once it has heard from the device (its script has run), the API key entered where
    the page asks for one."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/")
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.find_element("id", "readiness").text.startswith("Edge ready"))
    key_field = driver.find_element("id", "api-key")
    if key_field.is_displayed():
        key_field.send_keys(API_KEY)


def _draw_a_seven(driver) -> None:
    """A "7" on the pad: a bar across the top, then a stroke down to the lower left (offsets from its centre)."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver).move_to_element_with_offset(driver.find_element("id", "pad"), -80, -90)
    chain.click_and_hold()
    for dx, dy in [(40, 0)] * 4 + [(-20, 35)] * 5:
        chain.move_by_offset(dx, dy)
    chain.release().perform()


def _wait_for_error(driver) -> str:
    """The status line once it reports an error."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, TIMEOUT_S).until(lambda d: "error" in d.find_element("id", "status").get_attribute("class"))
    return driver.find_element("id", "status").text


def _classify_posts(driver, device_url: str) -> list[str]:
    """The POSTs to /classify among the requests the browser made since the last look at its log."""
    return [url for url in _requested_urls(driver) if url.startswith(f"{device_url}/classify")]


def test_draw_a_digit_and_read_the_answer_off_the_page(
    browser, device_url: str, client: httpx.Client, checkpoint: Path, tmp_path: Path
) -> None:
    driver = browser
    _open_page(driver, device_url)
    assert driver.find_element("id", "api-key").is_displayed(), "the device has an API key: the page must ask for it"

    _draw_a_seven(driver)
    driver.find_element("id", "classify-drawing").click()
    answer = _wait_for_answer(driver)

    # what the page shows
    label = driver.find_element("id", "label").text
    shown_bytes = _count(driver.find_element("id", "transmitted-bytes").text)
    shown_image_bytes = _count(driver.find_element("id", "image-bytes").text)
    shown_float32_bytes = _count(driver.find_element("id", "float32-bytes").text)
    driver.save_screenshot(str(tmp_path / "web_page.png"))
    assert (tmp_path / "web_page.png").stat().st_size > 10_000

    # the drawing the page sent: a PNG of the pad with the stroke on it
    drawing = _uploaded_bytes(driver)
    pixels = np.asarray(Image.open(io.BytesIO(drawing)).convert("L"))
    assert pixels.shape == (280, 280) and 0.02 < (pixels > 127).mean() < 0.5, "the stroke is not on the canvas"

    # ... classified again outside the browser: the same answer, the same bytes
    expected = client.post("/classify", files=upload(drawing, "drawing.png")).json()
    assert label == answer["label"] == expected["label"]
    geometry = load_checkpoint(checkpoint, "head").config.geometry()
    assert (
        shown_bytes
        == expected["transmitted_bytes"]
        == geometry.transmitted_bytes
        == math.ceil(math.prod(geometry.spike_shape) / 8)
    )
    assert shown_image_bytes == expected["image_bytes"] == len(drawing)
    assert shown_float32_bytes == expected["float32_feature_bytes"] == geometry.float32_feature_bytes

    if "uncertain" in expected:  # the flag is shown when the answer carries it and is set
        assert driver.find_element("id", "uncertain").is_displayed() == answer["uncertain"]

    # top 5, energy, latency and one raster per time step and channel
    assert len(driver.find_elements("css selector", "#top5 .track")) == len(expected["top5"])
    assert driver.find_element("id", "energy-45nm").text.endswith("mJ")
    assert driver.find_element("id", "energy-rolls").text.endswith("mJ")
    assert driver.find_element("id", "energy-ann").text.endswith("mJ")
    assert {"device", "network", "edge"} <= {
        e.get_attribute("id").removeprefix("latency-")
        for e in driver.find_elements("css selector", "#latency-legend span")
    }
    t, c, h, w = expected["spike_shape"]
    rasters = driver.find_elements("css selector", "#spikes canvas.spike-map")
    assert len(rasters) == t * c
    assert (int(rasters[0].get_attribute("width")), int(rasters[0].get_attribute("height"))) == (w, h)
    fired = int(driver.find_element("id", "spikes").get_attribute("data-spikes"))
    assert fired == int(unpack(answer["spikes"]).sum()) > 0

    # an uploaded file goes the same way, classified as soon as it is chosen
    image = synthetic_png(seed=9, size=(48, 40))
    (tmp_path / "upload.png").write_bytes(image)
    driver.find_element("id", "file").send_keys(str(tmp_path / "upload.png"))
    answer = _wait_for_answer(driver, previous=answer)
    assert _count(driver.find_element("id", "image-bytes").text) == len(image) == answer["image_bytes"]
    assert driver.find_element("id", "label").text == client.post("/classify", files=upload(image)).json()["label"]

    # a blank page has nothing to name: the page says so, with no label or probability beside the flag
    buffer = io.BytesIO()
    Image.new("L", (120, 90), 255).save(buffer, "PNG")
    (tmp_path / "blank.png").write_bytes(buffer.getvalue())
    driver.find_element("id", "file").send_keys(str(tmp_path / "blank.png"))
    answer = _wait_for_answer(driver, previous=answer)
    assert answer["blank"] is True and answer["label"] is None and answer["uncertain"] is True
    assert "nothing to classify" in driver.find_element("id", "label").text
    assert driver.find_element("id", "probability").text == ""
    # flagged, with no score beside it: the score of a blank input is that of no class in particular
    assert driver.find_element("id", "uncertain").text == "uncertain"
    assert driver.find_elements("css selector", "#top5 .track") == []

    urls = _requested_urls(driver)
    assert {f"{device_url}/web/app.js", f"{device_url}/classify?spikes=true"} <= set(urls)
    _assert_only_local(urls, device_url)
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"the page logged errors: {severe}"


def test_the_docs_render_offline_in_the_browser(browser, device_url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get_log("performance")  # drop what earlier tests requested
    driver.get(f"{device_url}/docs")
    WebDriverWait(driver, TIMEOUT_S).until(  # Swagger UI ran: it fetched the schema and lists the routes
        lambda d: "/classify" in " ".join(e.text for e in d.find_elements("css selector", ".opblock-summary-path"))
    )
    urls = _requested_urls(driver)
    assert f"{device_url}/docs-assets/swagger-ui-bundle.js" in urls and f"{device_url}/openapi.json" in urls
    _assert_only_local(urls, device_url)


def test_the_api_key_field_shows_only_where_the_device_asks_for_one(
    browser, device_url: str, keyless_device_url: str
) -> None:
    driver = browser
    for url, asks in ((keyless_device_url, False), (device_url, True)):
        _open_page(driver, url)
        row = driver.find_element("id", "api-key-row")
        assert row.is_displayed() == asks, f"the key field of {'a keyed' if asks else 'an open'} device"
        assert driver.execute_script("return getComputedStyle(arguments[0]).display", row) == (
            "flex" if asks else "none"
        )


def test_an_untouched_pad_is_not_sent(browser, device_url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    _open_page(driver, device_url)
    _requested_urls(driver)  # from here on
    status = driver.find_element("id", "status")
    result = driver.find_element("id", "result")

    def classify_the_untouched_pad() -> None:
        driver.find_element("id", "classify-drawing").click()
        WebDriverWait(driver, TIMEOUT_S).until(lambda d: "empty" in status.text)
        assert not result.is_displayed(), "no answer is shown for a pad with nothing drawn"

    classify_the_untouched_pad()  # as the page opens
    _draw_a_seven(driver)
    driver.find_element("id", "classify-drawing").click()
    _wait_for_answer(driver)
    assert result.is_displayed()
    driver.find_element("id", "clear").click()
    classify_the_untouched_pad()  # cleared: the answer about the drawing goes with it
    assert "error" not in status.get_attribute("class")
    # one request went to the device, the drawing's (sent after the first empty click and answered)
    assert _classify_posts(driver, device_url) == [f"{device_url}/classify?spikes=true"]


def test_a_failed_upload_clears_the_answer_and_shows_no_preview(
    browser, device_url: str, client: httpx.Client, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    _open_page(driver, device_url)
    preview = driver.find_element("id", "preview")
    result = driver.find_element("id", "result")

    image = synthetic_png(seed=5, size=(48, 40))
    (tmp_path / "digit.png").write_bytes(image)
    driver.find_element("id", "file").send_keys(str(tmp_path / "digit.png"))
    _wait_for_answer(driver)
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: preview.is_displayed())
    assert driver.execute_script("return arguments[0].naturalWidth", preview) == Image.open(io.BytesIO(image)).width
    assert result.is_displayed()

    not_an_image = b"a shopping list, not an image\n"
    (tmp_path / "notes.png").write_bytes(not_an_image)
    driver.find_element("id", "file").send_keys(str(tmp_path / "notes.png"))
    refusal = client.post("/classify", files=upload(not_an_image, "notes.png"))  # what the device says of it
    assert refusal.status_code == 400
    assert _wait_for_error(driver) == f"400: {refusal.json()['detail']}"
    assert not result.is_displayed(), "the previous image's answer must not stand beside the error"
    # once the browser has given up on decoding the file, no broken image is left in the preview's place
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.execute_script("return arguments[0].complete", preview))
    assert driver.execute_script("return arguments[0].naturalWidth", preview) == 0
    assert not preview.is_displayed()


def test_redoc_renders_offline_in_the_browser(browser, device_url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # every image the page creates, with the source it was given, recorded before the page's own scripts run
    recorder = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": """
        window.sbnImages = [];
        new MutationObserver((mutations) => {
          for (const m of mutations) for (const node of m.addedNodes) {
            for (const img of node.nodeType === 1 ? [node, ...node.querySelectorAll("img")] : []) {
              if (img.tagName === "IMG") window.sbnImages.push({src: img.getAttribute("src"),
                                                              link: img.closest("a") && img.closest("a").href});
            }
          }
        }).observe(document, {childList: true, subtree: true});"""
        },
    )
    try:
        driver.get_log("performance")  # drop what earlier tests requested
        driver.get_log("browser")
        driver.get(f"{device_url}/redoc")
        # ReDoc ran: it fetched the schema and shows the routes, and has drawn its attribution link's logo
        WebDriverWait(driver, TIMEOUT_S).until(lambda d: "/classify" in d.find_element("tag name", "body").text)
        attribution = "https://redocly.com/redoc/"
        logos = WebDriverWait(driver, TIMEOUT_S).until(
            lambda d: [image for image in d.execute_script("return window.sbnImages") if image["link"] == attribution]
        )
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", recorder)
    assert all(not logo["src"] or logo["src"].startswith(f"{device_url}/") for logo in logos), logos
    urls = _requested_urls(driver)
    assert f"{device_url}/docs-assets/redoc.standalone.js" in urls and f"{device_url}/openapi.json" in urls
    _assert_only_local(urls, device_url)
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"the docs logged errors: {severe}"
