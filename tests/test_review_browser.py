"""The review page in a real headless browser, on a demo-like warehouse, and the night after it.

The warehouse is what `make demo` makes, at a small size: the demo's generator (40 products, one
competitor, the demo's export maps), the nightly job's steps through `run_nightly`, and the offline
teacher on the synthetic benchmark's train split. The models are the tests' tiny random encoder and
student, not the trained cascade (training is minutes), so the matcher's decisions here are poor:
which gives the page plenty to catch. The screenshots in docs/ are taken from it: `make screenshots`
(EPM_SCREENSHOTS=docs) writes them there; a plain test run keeps them in its temporary folder, so
running the suite leaves the working tree as it was.

Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`; `.ci/run`
installs them); nothing is downloaded at run time. Without them the browser tests are skipped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from review_client import TestClientReviewer, hidden_fields
from catalog_tiny import tiny_encoder
from tiny_student import tiny_student  # noqa: F401

from epm_spark.config import load_settings
from epm_spark.io import delta
from epm_spark.pipeline.matcher.review_app import create_app, make_server
from epm_spark.pipeline.matcher.review_app.store import ReviewStore

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
browser_tests = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs Debian's Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): "
           "apt-get install chromium chromium-driver (.ci/run installs them)")
SCRIPT_TITLE = "<script>window.__pwned=1</script>"
IMG_TITLE = '<img src=x onerror="window.__pwned=2">'
WINDOW = (1280, 1000)


@pytest.fixture(scope="module")
def demo_night(spark, tmp_path_factory, tiny_student):
    from epm_spark.demo import EXPORT_CURRENCY, EXPORT_MAPS
    from epm_spark.pipeline.matcher.teach import teach
    from epm_spark.pipeline.catalog.generate import generate
    from epm_spark.pipeline.catalog.nightly import Export, NightlyPlan, run_nightly

    root = tmp_path_factory.mktemp("review-demo")
    settings = load_settings(overrides=["spark.ui_enabled=false", "block.k=3", "block.query_partitions=2",
                                        "match.explain=none"], warehouse=str(root / "warehouse"))
    settings.encoder.backbone = tiny_encoder(root / "encoder")
    report = generate(settings, out=str(root / "exports"), products=40, competitors=1, seed=7)
    exports = {source: Export(str(path), EXPORT_MAPS.get(source), EXPORT_CURRENCY.get(source))
               for source, path in report.files.items()}
    run_nightly(spark, settings, NightlyPlan(exports, "ours", model=str(tiny_student)), run_id="n1")
    teach(settings, benchmark="synthetic", split="train", run_id="t1")
    return settings, str(tiny_student)


@pytest.fixture
def night(demo_night, tmp_path):
    settings, _ = demo_night
    warehouse = tmp_path / "warehouse"
    shutil.copytree(settings.warehouse, warehouse)
    return dataclasses.replace(settings, warehouse=str(warehouse))


@contextmanager
def serving(settings):
    server = make_server(settings, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Without the background-networking flags Chromium reaches out at start-up, which a closed network refuses.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser, base: str, name: str = "alice") -> None:
    from selenium.webdriver.common.by import By

    browser.get(base + "/pairs")
    browser.find_element(By.ID, "reviewer-name").send_keys(name)
    submit_and_wait(browser, lambda: browser.find_element(By.ID, "sign-in").click())
    assert browser.find_element(By.ID, "reviewer").text == name


def submit_and_wait(browser, action) -> None:
    """Do ``action`` (a click or a key) and wait until the next page has loaded."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    action()

    def gone(_) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Chromium answers this way when the old page is torn down during the check.
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(browser, 60).until(gone)
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.readyState") == "complete")


def shown(browser) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    form = browser.find_element(By.ID, "verdict")
    return {e.get_attribute("name"): e.get_attribute("value")
            for e in form.find_elements(By.CSS_SELECTOR, "input[type=hidden]") if e.get_attribute("name") != "csrf"}


def progress(browser) -> int:
    from selenium.webdriver.common.by import By

    return int(browser.find_element(By.CSS_SELECTOR, "#progress strong").text)


def key(pair: dict[str, str]) -> tuple[str, ...]:
    return tuple(pair[c] for c in ("benchmark", "split", "left_source", "left_id", "right_source", "right_id",
                                   "teacher"))


@browser_tests
def test_decide_three_pairs_by_click_and_by_key(night, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with serving(night) as base:
        sign_in(browser, base)
        total = progress(browser)
        assert total >= 4
        decided = {}
        # By click, overruling the teacher: the note becomes the rationale.
        pair, teacher = shown(browser), browser.find_element(By.ID, "teacher-label").text
        verdict = "no_match" if teacher == "match" else "match"
        browser.find_element(By.ID, "note").send_keys("Checked both listings: the model numbers tell.")
        button = "btn-no-match" if verdict == "no_match" else "btn-match"
        submit_and_wait(browser, lambda: browser.find_element(By.ID, button).click())
        assert "Recorded" in browser.find_element(By.CSS_SELECTOR, ".flash").text
        decided[key(pair)] = verdict
        # By key, agreeing with the teacher (m or n), twice; the focus is on the page, not in the note.
        for _ in range(2):
            pair, teacher = shown(browser), browser.find_element(By.ID, "teacher-label").text
            submit_and_wait(browser, lambda t=teacher: ActionChains(browser).send_keys("m" if t == "match"
                                                                                       else "n").perform())
            decided[key(pair)] = teacher
        assert len(decided) == 3
        browser.refresh()
        assert progress(browser) == total - 3
        assert key(shown(browser)) not in decided
    queue = ReviewStore(night).queue()
    left = {tuple(r) for r in queue[["benchmark", "split", "left_source", "left_id", "right_source", "right_id",
                                     "teacher"]].itertuples(index=False)}
    assert not left & set(decided)
    rows = delta.read_pandas(night.warehouse, "rationales")
    for k, verdict in decided.items():
        row = rows[(rows.left_id == k[3]) & (rows.right_id == k[5]) & (rows.benchmark == k[0])].iloc[0]
        assert row.run_id == "review:alice" and row.review_status in ("accepted", "corrected")
        assert f'"label": "{verdict}"' in row.verified_decision


@browser_tests
def test_split_a_cluster_member(night, browser):
    from selenium.webdriver.common.by import By

    with serving(night) as base:
        sign_in(browser, base)
        browser.get(base + "/clusters")
        cluster = browser.find_element(By.CSS_SELECTOR, "section.cluster")
        cluster_id = cluster.get_attribute("id")
        row = cluster.find_element(By.CSS_SELECTOR, "tr.member")
        member = row.get_attribute("data-product")
        row.find_element(By.NAME, "note").send_keys("Another product: a different model number.")
        submit_and_wait(browser, lambda: row.find_element(By.CSS_SELECTOR, "button").click())
        assert "Split " + member in browser.find_element(By.CSS_SELECTOR, ".flash").text
        again = browser.find_element(By.ID, cluster_id).find_element(
            By.CSS_SELECTOR, f"tr.member[data-product='{member}']")
        assert "split off by alice" in again.text
    rows = delta.read_pandas(night.warehouse, "rationales")
    mine = rows[(rows.run_id == "review:alice") & ((rows.left_id == member) | (rows.right_id == member))]
    assert len(mine) >= 1 and mine.verified_decision.str.contains('"label": "no_match"').all()


@browser_tests
def test_a_script_title_does_not_execute(night, browser):
    from selenium.webdriver.common.by import By

    first = ReviewStore(night).queue().iloc[0]
    products = delta.read_pandas(night.warehouse, "products")
    for source, pid, title in ((first.left_source, first.left_id, SCRIPT_TITLE),
                               (first.right_source, first.right_id, IMG_TITLE)):
        products.loc[(products.source == source) & (products.product_id == pid), "title"] = title
        products.loc[(products.source == source) & (products.product_id == pid), "brand"] = IMG_TITLE
    for source in {first.left_source, first.right_source}:
        delta.write_pandas(night.warehouse, "products", products[products.source == source], mode="replace",
                           partition={"source": source})
    with serving(night) as base:
        sign_in(browser, base)
        for path in ("/pairs", "/clusters", "/prices"):
            browser.get(base + path)
            assert browser.execute_script("return window.__pwned") is None, path
            assert browser.find_elements(By.TAG_NAME, "img") == [], path
            scripts = [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script")]
            assert scripts == [base + "/static/review.js"], path
        browser.get(base + "/pairs")
        assert browser.find_element(By.CSS_SELECTOR, "#left .title").text == SCRIPT_TITLE
        assert browser.find_element(By.CSS_SELECTOR, "#right .title").text == IMG_TITLE
        assert IMG_TITLE in browser.find_element(By.CSS_SELECTOR, "table.compare").text
        assert browser.execute_script("return window.__pwned") is None


@browser_tests
def test_screenshots_of_the_three_views(night, browser, tmp_path):
    """review-queue.png, review-clusters.png and review-prices.png, taken on the demo-like night; into docs/
    only under EPM_SCREENSHOTS=docs (`make screenshots`)."""
    folder = REPO / "docs" if os.environ.get("EPM_SCREENSHOTS") == "docs" else tmp_path
    # The window's size includes what headless Chromium keeps for its own frame; fix the page's instead.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    with serving(night) as base:
        sign_in(browser, base)
        for path, name in (("/pairs", "review-queue.png"), ("/clusters", "review-clusters.png"),
                           ("/prices", "review-prices.png")):
            browser.get(base + path)
            png = browser.get_screenshot_as_png()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = struct.unpack(">II", png[16:24])
            assert (width, height) == WINDOW and len(png) > 20_000, (name, width, height, len(png))
            (folder / name).write_bytes(png)


def test_the_next_night_follows_the_pages_verdicts(spark, demo_night, night):
    """A member split off and a price gap rejected on the page: the next night's match decides those pairs
    as the person did, dedup separates the member, price-match drops the pair."""
    from epm_spark.pipeline.catalog.dedup import dedup
    from epm_spark.pipeline.catalog.match import match
    from epm_spark.pipeline.catalog.price_match import price_match

    _, model = demo_night
    alice = TestClientReviewer(create_app(night), "alice")
    _, page = alice.get("/clusters")
    split = hidden_fields(page[page.index('<form method="post" action="/clusters/split"'):])  # the first member
    status, _ = alice.post("/clusters/split", {**split, "note": "Another product: the model numbers differ."})
    assert status == 303
    member = split["product_id"]
    before = delta.read_pandas(night.warehouse, "clusters", filters=[("run_id", "=", "n1")])
    neighbours = set(before[before.cluster_id == before[before.product_id == member].cluster_id.iloc[0]].product_id)
    neighbours.discard(member)

    _, page = alice.get("/prices")
    gap = hidden_fields(page[page.index('<form method="post" action="/prices/reject"'):])
    status, _ = alice.post("/prices/reject", {**gap, "note": "Not the same product: another model."})
    assert status == 303

    for right in ("ours", gap["competitor_source"]):
        match(spark, night, left="ours", right=right, run_id="n2", candidates_run_id="n1", model=model)
    matches = delta.read_pandas(night.warehouse, "matches", filters=[("run_id", "=", "n2")])
    by_review = matches[matches.decided_by == "review"]
    assert (by_review.label == "no_match").all() and (by_review.probability == 0.0).all()
    assert member in set(by_review.left_id) | set(by_review.right_id)
    assert ((by_review.left_id == gap["our_id"]) & (by_review.right_id == gap["competitor_id"])).any()

    dedup(spark, night, source="ours", run_id="n2")
    after = delta.read_pandas(night.warehouse, "clusters", filters=[("run_id", "=", "n2")])
    now_with = set(after[after.cluster_id == after[after.product_id == member].cluster_id.iloc[0]].product_id)
    assert not now_with & neighbours, "the split-off member is still clustered with its old neighbours"

    price_match(spark, night, ours="ours", competitors=[gap["competitor_source"]], run_id="n2")
    prices = delta.read_pandas(night.warehouse, "price_comparisons", filters=[("run_id", "=", "n2")])
    assert not ((prices.our_id == gap["our_id"]) & (prices.competitor_id == gap["competitor_id"])).any()
    assert not prices.empty
