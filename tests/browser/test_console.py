"""The web console in a real browser: Debian's chromium, headless, driven by Selenium (issue 12).

One ``logsvc serve`` and one browser serve the whole module (starting each costs seconds);
every test sends records carrying a word of its own and queries on it, so the tests do not
see each other's records. Records go in through the stock ``logging.handlers.SocketHandler``;
everything is waited for with ``WebDriverWait`` polling a condition, never a sleep.

The tests skip, saying why, only when chromium or its driver is not installed (``.ci/run``
installs both).
"""

from __future__ import annotations

import datetime as _dt
import logging
import logging.handlers
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.helpers import Service, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
        "apt-get install chromium chromium-driver (.ci/run does)",
    ),
]

WAIT_S = 15.0  # page loads and searches; the tail has its own, tighter bound


class Console:
    """The running service, its console's address and a way to send it records."""

    def __init__(self, svc: Service, url: str) -> None:
        self.svc = svc
        self.url = url

    def send(self, *records: dict[str, Any]) -> None:
        """Send records through a stock SocketHandler, as an application would."""
        handler = logging.handlers.SocketHandler("127.0.0.1", self.svc.port)
        try:
            for fields in records:
                d = {"name": "console.test", "levelno": logging.INFO, "levelname": "INFO", **fields}
                handler.handle(logging.makeLogRecord(d))
        finally:
            handler.close()

    def stored(self, word: str) -> int:
        return len(self.svc.rows("seq", "message LIKE %s", [f"%{word}%"]))

    def send_stored(self, word: str, *records: dict[str, Any]) -> None:
        """Send and wait until PostgreSQL holds them all (so a page loaded next finds them)."""
        before = self.stored(word)
        self.send(*records)
        wait_for(lambda: self.stored(word) >= before + len(records), 30, f"{len(records)} records of {word}")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, dsn: str) -> Iterator[Console]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    svc = Service(tmp_path_factory.mktemp("console") / "data", dsn, schema)
    try:
        svc.start()
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics", svc.log())
        assert m, svc.log()
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the PostgreSQL connection")
        yield Console(svc, f"http://127.0.0.1:{m.group(1)}")
    finally:
        svc.kill()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--disable-extensions", "--no-first-run"):  # fmt: skip
        opts.add_argument(arg)
    # An alert() from a hostile message must stay open for the test to see, not be dismissed.
    opts.set_capability("unhandledPromptBehavior", "ignore")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers --------------------------------------------------------------------------------------


def word(name: str) -> str:
    """A word no other test's records contain."""
    return f"{name}{uuid.uuid4().hex[:10]}"


def until(
    driver: webdriver.Chrome, cond: Callable[[webdriver.Chrome], Any], what: str, timeout: float = WAIT_S
) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(cond, f"timed out waiting for {what}")


def open_view(driver: webdriver.Chrome, c: Console, **params: str) -> None:
    driver.get(f"{c.url}/?{urlencode(params)}")
    wait_searched(driver)


def wait_searched(driver: webdriver.Chrome) -> None:
    until(driver, lambda d: d.execute_script("return document.readyState") == "complete", "the page")
    until(driver, lambda d: "newest first" in d.find_element(By.ID, "status").text, "the search to finish")


def rows(driver: webdriver.Chrome) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#results > .row")


def messages(driver: webdriver.Chrome, css: str = "#results > .row .msg") -> list[str]:
    return [str(t) for t in driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)", css
    )]  # fmt: skip


def url_params(driver: webdriver.Chrome) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(driver.current_url).query).items()}


def wait_live(driver: webdriver.Chrome) -> None:
    until(driver, lambda d: d.find_element(By.ID, "live-state").text in ("live", "paused"), "the live tail")


# -- tests ----------------------------------------------------------------------------------------


def test_a_search_narrows_the_list(browser: webdriver.Chrome, console: Console) -> None:
    w = word("search")
    console.send_stored(
        w,
        *({"msg": f"{w} apple {i}", "code": 200} for i in range(6)),
        *({"msg": f"{w} banana {i}", "levelno": 40, "levelname": "ERROR", "code": 503} for i in range(4)),
    )
    open_view(browser, console, q=w)
    until(browser, lambda d: len(rows(d)) == 10, "the 10 records")

    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(f"{w} banana", Keys.ENTER)
    until(browser, lambda d: len(rows(d)) == 4, "the list to narrow to 4")
    assert all("banana" in m for m in messages(browser))
    assert url_params(browser)["q"] == f"{w} banana"

    # A page holds 100; "Load older" brings the next ones.
    more = word("page")
    console.send_stored(more, *({"msg": f"{more} {i}", "n": i, "kind": "page"} for i in range(130)))
    box.clear()
    box.send_keys(more, Keys.ENTER)
    until(browser, lambda d: len(rows(d)) == 100, "the first page")
    browser.find_element(By.ID, "more").click()
    until(browser, lambda d: len(rows(d)) == 130, "the second page")
    assert not browser.find_element(By.ID, "more").is_displayed()
    assert messages(browser)[-1] == f"{more} 0"
    # A key with a value per record is marked as such; one with a single value is not.
    hc = '#facets .facet.hc[data-field="extra.n"] .badge.hc'
    marked = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, hc), "the facets")
    assert [e.text for e in marked] == ["high cardinality"]
    assert browser.find_elements(By.CSS_SELECTOR, '#facets .facet[data-field="extra.kind"]:not(.hc)')
    # A shared link to a record past the first page still shows that record, above the list.
    oldest = rows(browser)[-1].get_attribute("data-id")
    assert oldest
    open_view(browser, console, q=more, id=oldest)
    out = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#selected-out .row.selected"), "it")
    assert out[0].find_element(By.CSS_SELECTOR, ".msg").text == f"{more} 0"
    assert len(rows(browser)) == 100

    # A facet value adds field:value to the query.
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(w, Keys.ENTER)
    until(browser, lambda d: len(rows(d)) == 10, "all 10 again")
    level = until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#facets [data-field="level"] a'), "facets"
    )
    errors = next(a for a in level if a.text == "ERROR")
    errors.click()
    until(browser, lambda d: len(rows(d)) == 4, "the ERROR facet to narrow the list")
    assert url_params(browser)["q"] == f"{w} level:ERROR"

    # An extra key's facet: its values are numbers in the records, and the term must match them.
    browser.back()
    until(browser, lambda d: len(rows(d)) == 10, "all 10 after Back")
    code = until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#facets [data-field="extra.code"] a'), "code"
    )
    next(a for a in code if a.text == "200").click()
    until(browser, lambda d: len(rows(d)) == 6, "the code 200 facet to narrow the list")
    assert url_params(browser)["q"] == f"{w} extra.code:200"


def test_a_bad_query_shows_the_message_and_its_position(browser: webdriver.Chrome, console: Console) -> None:
    browser.get(f"{console.url}/?{urlencode({'q': 'level>=nonsense'})}")
    err = until(
        browser,
        lambda d: d.find_element(By.ID, "qerror") if d.find_element(By.ID, "qerror").is_displayed() else None,
        "the error",
    )
    assert err.find_element(By.ID, "qerror-msg").text
    mark = err.find_element(By.CSS_SELECTOR, "#qerror-at mark")
    assert mark.text == "n"  # the value after level>= (position 7)
    assert "invalid" in (browser.find_element(By.ID, "q").get_attribute("class") or "")
    assert rows(browser) == []
    until(
        browser, lambda d: "until the query is fixed" in d.find_element(By.ID, "live-state").text, "tail off"
    )


def test_a_drag_on_the_histogram_narrows_the_range_and_the_url(
    browser: webdriver.Chrome, console: Console
) -> None:
    w = word("zoom")
    now = time.time()
    console.send_stored(
        w,
        *({"msg": f"{w} old {i}", "created": now - 50 * 60 + i} for i in range(5)),
        *({"msg": f"{w} new {i}", "created": now - 5 * 60 + i} for i in range(3)),
    )
    open_view(browser, console, q=w, since="1h")
    until(browser, lambda d: len(rows(d)) == 8, "the 8 records")
    over = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#histogram .u-over"), "the histogram")
    width = over.size["width"]
    # From the left edge to the middle: the first half hour holds the 5 old records only.
    (
        ActionChains(browser)
        .move_to_element_with_offset(over, -width // 2 + 2, 0)
        .click_and_hold()
        .move_by_offset(width // 2 - 2, 0)
        .release()
        .perform()
    )
    until(browser, lambda d: "until" in url_params(d), "the zoomed range in the URL")
    wait_searched(browser)
    until(browser, lambda d: len(rows(d)) == 5, "the list to narrow to the 5 old records")
    assert all(" old " in m for m in messages(browser))
    p = url_params(browser)
    since, end = _dt.datetime.fromisoformat(p["since"]), _dt.datetime.fromisoformat(p["until"])
    assert since.tzinfo is not None and end.tzinfo is not None
    assert _dt.timedelta(minutes=20) < end - since < _dt.timedelta(minutes=40)
    assert browser.find_element(By.ID, "until").get_attribute("value") == p["until"]

    # Back returns to the whole hour.
    browser.back()
    until(browser, lambda d: "until" not in url_params(d), "the previous URL")
    until(browser, lambda d: len(rows(d)) == 8, "all 8 records again")
    browser.forward()
    until(browser, lambda d: len(rows(d)) == 5, "the zoomed range again")

    # The URL alone gives the same view back.
    zoomed = browser.current_url
    browser.get("about:blank")
    browser.get(zoomed)
    wait_searched(browser)
    until(browser, lambda d: len(rows(d)) == 5, "the same 5 records from the URL")
    assert browser.find_element(By.ID, "since").get_attribute("value") == p["since"]


def test_a_record_sent_after_load_appears_in_the_tail_without_moving_the_page(
    browser: webdriver.Chrome, console: Console
) -> None:
    w = word("tail")
    console.send_stored(w, *({"msg": f"{w} seed {i:02d}"} for i in range(80)))
    open_view(browser, console, q=w)
    until(browser, lambda d: len(rows(d)) == 80, "the 80 seed records")
    wait_live(browser)

    # The reader has scrolled down, expanded a record and is typing in the query box.
    rows(browser)[30].find_element(By.CSS_SELECTOR, ".line").click()
    selected = browser.find_element(By.CSS_SELECTOR, "#results > .row.selected").get_attribute("data-id")
    browser.execute_script("document.getElementById('results-pane').scrollTop = 500")
    browser.execute_script("document.getElementById('q').focus()")
    watched = rows(browser)[40]
    top_before = watched.rect["y"]
    scroll_before = browser.execute_script("return document.getElementById('results-pane').scrollTop")

    sent = time.monotonic()
    console.send({"msg": f"{w} fresh"})
    until(
        browser, lambda d: any("fresh" in m for m in messages(d)), "the new record in the tail", timeout=2.0
    )
    latency = time.monotonic() - sent
    assert latency < 2.0

    assert messages(browser)[0] == f"{w} fresh"  # newest first: on top, above what is read
    assert abs(watched.rect["y"] - top_before) <= 1, "the rows being read moved"
    assert browser.execute_script("return document.getElementById('results-pane').scrollTop") > scroll_before
    still = browser.find_element(By.CSS_SELECTOR, "#results > .row.selected")
    assert still.get_attribute("data-id") == selected and still.find_elements(By.CSS_SELECTOR, ".detail")
    assert browser.execute_script("return document.activeElement.id") == "q"
    assert url_params(browser)["id"] == selected

    # Text the reader selected in the list stays selected while more records arrive.
    picked = browser.execute_script(
        "const m = document.querySelectorAll('#results > .row .msg')[45];"
        "const r = document.createRange(); r.selectNodeContents(m);"
        "getSelection().removeAllRanges(); getSelection().addRange(r); return getSelection().toString()"
    )
    assert picked.startswith(f"{w} seed ")
    console.send({"msg": f"{w} fresher"})
    until(browser, lambda d: any("fresher" in m for m in messages(d)), "the next record", timeout=2.0)
    assert browser.execute_script("return getSelection().toString()") == picked


def test_the_tail_says_how_many_records_it_skipped(browser: webdriver.Chrome, console: Console) -> None:
    w = word("flood")
    open_view(browser, console, q=w)
    wait_live(browser)
    # Far more than the tail sends per look (console.tail: at most 100 every 0.5 s), at once:
    # even stored over a few looks on a slow machine, some look finds more than 100.
    flood = 1500
    console.send_stored(w, *({"msg": f"{w} {i}"} for i in range(flood)))
    skipped = browser.find_element(By.ID, "skipped")

    def shown_and_skipped(d: webdriver.Chrome) -> bool:
        n = int(skipped.text.split()[0].replace(",", "")) if skipped.is_displayed() else 0
        return n > 0 and len(rows(d)) + n == flood

    until(browser, shown_and_skipped, "every record tailed or counted as skipped")
    assert "skipped" in skipped.text


def test_leaving_the_page_gives_its_stream_back(browser: webdriver.Chrome, console: Console) -> None:
    # A browser opens at most six connections to one host. A page kept in the back/forward
    # cache held its EventSource's, so the seventh load waited about a minute for one.
    for i in range(8):
        start = time.monotonic()
        open_view(browser, console, q=word(f"leave{i}"))
        wait_live(browser)
        assert time.monotonic() - start < 5.0, f"load {i + 1} waited for a connection"


def test_pause_holds_new_records_and_counts_them(browser: webdriver.Chrome, console: Console) -> None:
    w = word("pause")
    console.send_stored(w, {"msg": f"{w} before"})
    open_view(browser, console, q=w)
    until(browser, lambda d: len(rows(d)) == 1, "the first record")
    wait_live(browser)

    browser.find_element(By.ID, "pause").click()
    assert url_params(browser).get("paused") == "1"
    console.send_stored(w, *({"msg": f"{w} while paused {i}"} for i in range(3)))
    pending = browser.find_element(By.ID, "pending")
    until(browser, lambda d: pending.text.startswith("3 new"), "the paused counter to reach 3")
    assert len(rows(browser)) == 1  # held, not shown

    browser.find_element(By.ID, "pause").click()  # Resume
    until(browser, lambda d: len(rows(d)) == 4, "the held records to be shown")
    assert not pending.is_displayed()
    assert "paused" not in url_params(browser)


def test_context_shows_the_neighbours_by_process_and_by_trace(
    browser: webdriver.Chrome, console: Console
) -> None:
    w = word("ctx")
    pid = 4_000_000 + int(uuid.uuid4().int % 1_000_000)  # a process of its own: no other test's records
    now = time.time()
    console.send_stored(
        w,
        *(
            {"msg": f"{w} n{i:02d}", "process": pid, "created": now - 60 + i * 0.01,
             "trace_id": f"{w}-{'even' if i % 2 == 0 else 'odd'}"}
            for i in range(41)
        ),
    )  # fmt: skip
    open_view(browser, console, q=f"{w} n20")
    until(browser, lambda d: len(rows(d)) == 1, "the anchor record")
    rows(browser)[0].find_element(By.CSS_SELECTOR, ".line").click()
    browser.find_element(By.CSS_SELECTOR, "#results .row.selected .ctx-process").click()

    ctx = "#ctx-list > .row .msg"
    names = [f"{w} n{i:02d}" for i in range(41)]
    until(browser, lambda d: messages(d, ctx) == names[::-1], "20 before and 20 after, newest first")
    anchor = browser.find_element(By.CSS_SELECTOR, "#ctx-list > .row.anchor .msg")
    assert anchor.text == f"{w} n20"
    assert url_params(browser)["ctx"] == "process"

    # Fewer at a time, then "load more" each way.
    Select(browser.find_element(By.ID, "ctx-n")).select_by_visible_text("10")
    until(browser, lambda d: messages(d, ctx) == names[10:31][::-1], "10 before and 10 after")
    browser.find_element(By.ID, "ctx-older").click()
    until(browser, lambda d: messages(d, ctx) == names[0:31][::-1], "10 more older")
    browser.find_element(By.ID, "ctx-newer").click()
    until(browser, lambda d: messages(d, ctx) == names[::-1], "10 more newer")

    # Same trace: every other record (the anchor's trace is "even"), still 10 each side.
    Select(browser.find_element(By.ID, "ctx-by")).select_by_value("trace")
    evens = names[0:41:2]
    until(browser, lambda d: messages(d, ctx) == evens[::-1], "the even records around n20")
    assert url_params(browser)["ctx"] == "trace"


def test_a_copied_url_reproduces_the_view(browser: webdriver.Chrome, console: Console) -> None:
    w = word("share")
    console.send_stored(w, *({"msg": f"{w} {i}", "trace_id": f"{i:032x}"} for i in range(5)))
    open_view(browser, console, q=w, since="30m")
    until(browser, lambda d: len(rows(d)) == 5, "the 5 records")
    rows(browser)[2].find_element(By.CSS_SELECTOR, ".line").click()
    selected = browser.find_element(By.CSS_SELECTOR, "#results > .row.selected").get_attribute("data-id")
    wait_live(browser)
    browser.find_element(By.ID, "pause").click()
    copied = browser.current_url

    browser.get("about:blank")
    browser.get(copied)
    wait_searched(browser)
    until(browser, lambda d: len(rows(d)) == 5, "the same 5 records")
    assert browser.find_element(By.ID, "q").get_attribute("value") == w
    assert browser.find_element(By.ID, "since").get_attribute("value") == "30m"
    row = until(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, "#results > .row.selected"), "the selection"
    )
    assert row.get_attribute("data-id") == selected and row.find_elements(By.CSS_SELECTOR, ".detail")
    assert browser.find_element(By.ID, "pause").get_attribute("aria-pressed") == "true"

    # A trace id in extra is a link that filters on it (replacing the query).
    link = row.find_element(By.CSS_SELECTOR, ".line .ids a")
    link.click()
    until(browser, lambda d: len(rows(d)) == 1, "the one record of that trace")
    assert url_params(browser)["q"] == f'trace_id:"{2:032x}"'


HOSTILE = (
    "<script>window.__pwned = 1; alert(1)</script>",
    '<img src="x" onerror="window.__pwned = 2; alert(2)">',
    "javascript:alert(3)",
    "\x1b[31mred\x1b[0m \x1b]8;;http://example.invalid\x07link\x1b]8;;\x07",
    "\u202egnp.exe",
)


def test_hostile_messages_render_as_text(browser: webdriver.Chrome, console: Console) -> None:
    w = word("hostile")
    big = f"{w} " + "A" * 1_000_000
    browser.get_log("browser")  # type: ignore[no-untyped-call]  # drop what earlier pages logged
    console.send_stored(
        w,
        *(
            {"msg": f"{w} {h}", "url": "javascript:alert(4)", "request_id": "javascript:alert(5)"}
            for h in HOSTILE
        ),
        {"msg": big},
    )
    open_view(browser, console, q=w)
    until(browser, lambda d: len(rows(d)) == len(HOSTILE) + 1, "every hostile record")
    for r in rows(browser):
        r.find_element(By.CSS_SELECTOR, ".line").click()  # expanded: every field rendered
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 -- reading it is the check
        assert browser.execute_script("return window.__pwned") is None
        assert r.find_elements(By.CSS_SELECTOR, ".detail img, .detail script") == []
    rows(browser)[0].find_element(By.CSS_SELECTOR, ".line").click()  # the newest: the 1 MB line
    # The list holds the start of it; expanded, the whole record is fetched and "show all" shows it.
    whole = (
        "const r = document.querySelector('#results > .row.selected');"
        "return r && !r.textContent.includes('Loading the whole record') && r.querySelector('.showall')"
    )
    until(browser, lambda d: d.execute_script(whole), "the whole record").click()
    scripts = browser.execute_script("return Array.from(document.scripts, s => new URL(s.src).pathname)")
    assert sorted(scripts) == ["/static/app.js", "/static/vendor/uPlot/uPlot.iife.min.js"]
    assert browser.find_elements(By.CSS_SELECTOR, "#results img, #results script, #results iframe") == []
    hrefs = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href]'), a => [a.protocol, a.origin])"
    )
    assert hrefs and all(h == ["http:", console.url] for h in hrefs), hrefs

    text = "\n".join(messages(browser))
    assert f"{w} {HOSTILE[0]}" in text and f"{w} {HOSTILE[1]}" in text and HOSTILE[2] in text
    assert "\\x1b[31mred\\x1b[0m" in text and "\\u202egnp.exe" in text  # controls shown, not obeyed
    cut = next(m for m in messages(browser) if "AAAA" in m)
    assert len(cut) < 1000  # the list shows the start of a long line
    full = browser.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('#results .detail .val'),"
        " e => e.textContent.length))"
    )
    assert full >= 1_000_000
    log: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [
        e["message"] for e in log if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
    ]
    assert errors == []  # no script error, no CSP violation


def test_the_page_is_served_with_the_package(console: Console) -> None:
    """The static files come from the installed package and every one is under our origin."""
    import urllib.request

    with urllib.request.urlopen(f"{console.url}/", timeout=10) as resp:
        page = resp.read().decode()
    assert "Content-Security-Policy" in page and "script-src 'self'" in page
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        with urllib.request.urlopen(f"{console.url}{path}", timeout=10) as resp:
            assert resp.status == 200 and resp.read()


def test_a_console_with_a_token_opens_from_its_link_and_tails(
    browser: webdriver.Chrome, tmp_path: Path, dsn: str, schema: str
) -> None:
    token = uuid.uuid4().hex
    svc = Service(tmp_path / "data", dsn, schema, "--console-token", token).start()
    try:
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics", svc.log())
        assert m, svc.log()
        c = Console(svc, f"http://127.0.0.1:{m.group(1)}")
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the PostgreSQL connection")
        w = word("token")
        c.send_stored(w, {"msg": f"{w} first"})

        browser.get(f"{c.url}/?{urlencode({'q': w})}")  # no token: refused, saying how
        assert "token" in browser.find_element(By.TAG_NAME, "body").text

        # The link with the token: the page drops it from the address and keeps it in a cookie,
        # which the API calls and the live tail's EventSource send.
        browser.get(f"{c.url}/?{urlencode({'token': token, 'q': w})}")
        wait_searched(browser)
        until(browser, lambda d: len(rows(d)) == 1, "the record")
        assert url_params(browser) == {"q": w, "since": "1h"}
        wait_live(browser)
        c.send({"msg": f"{w} second"})
        until(browser, lambda d: len(rows(d)) == 2, "the tailed record")
    finally:
        svc.kill()
        browser.delete_all_cookies()


def test_logsvc_console_serves_the_same_page_over_the_database(
    browser: webdriver.Chrome, console: Console, dsn: str, tmp_path: Path
) -> None:
    # `logsvc console`: no ingest, only the database `serve` writes to (a read replica's role).
    log_path = tmp_path / "console.log"
    cmd = [
        sys.executable, "-m", "logsvc", "console", "--dsn", dsn, "--schema", console.svc.schema,
        "--listen", "127.0.0.1:0",
    ]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        found: list[str] = []

        def listening() -> bool:
            assert proc.poll() is None, log_path.read_text()
            m = re.search(r"Console listening on (http://127\.0\.0\.1:\d+)/", log_path.read_text())
            found.extend([m.group(1)] if m else [])
            return bool(found)

        wait_for(listening, 30, "logsvc console to listen")
        w = word("replica")
        console.send_stored(w, *({"msg": f"{w} {i}"} for i in range(3)))
        open_view(browser, Console(console.svc, found[0]), q=w)
        until(browser, lambda d: len(rows(d)) == 3, "the stored records")
        wait_live(browser)
        console.send({"msg": f"{w} live"})  # to serve; the console sees it in the database
        until(browser, lambda d: messages(d)[0] == f"{w} live", "the tailed record")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
