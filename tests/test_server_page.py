"""The chat page (server/static/) in a real browser: headless Chromium driven by Selenium,
against the real server on the tiny model.

Needs Debian's ``chromium`` and ``chromium-driver`` (.ci/run installs them). Without them the
tests are skipped, except in CI, where a missing browser is a failure. Selenium never
downloads a driver (``SE_OFFLINE``). Waits poll the page rather than sleep fixed amounts: the
machine may be busy.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from server_fixtures import Server, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Generous: the tiny model is fast, but CI shares two cores with the rest of the suite.
TIMEOUT_S = 30
# Enough tokens that the reply is still streaming when the test presses Stop (the context is 2048).
LONG_REPLY_TOKENS = 2000
INJECTION = '<img src=x onerror="window.injected = true">'
API_KEY = "page-test-key"
LAPTOP = (1280, 800)
PHONE = (375, 740)


# ---------------------------------------------------------------------------------------------
# The servers (one per configuration) and the browser, shared by the module's tests.


@pytest.fixture(scope="module")
def model(tiny_model_path):
    from gptj_ggml import Model

    # The README's tiny shape rather than the fixtures' smallest: a 2048-token context and a few
    # hundred tokens/s, so that a long reply streams for seconds, long enough to press Stop.
    return Model(tiny_model_path("f16", n_embd=256, n_head=8, n_layer=4, rotary_dim=16, n_positions=2048))


@pytest.fixture(scope="module")
def server(model) -> Iterator[Server]:
    from gptj_ggml.server import create_app

    # One slot: "the slot is free again" then means this page's request alone.
    with running_server(create_app(model, n_slots=1)) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(model) -> Iterator[Server]:
    from gptj_ggml.server import create_app

    with running_server(create_app(model, n_slots=1, api_key=API_KEY), api_key=API_KEY) as running:
        yield running


@pytest.fixture(scope="module")
def full_server(model) -> Iterator[Server]:
    """A server with one slot and no queue: while the slot works, every other request is a 503."""
    from gptj_ggml.server import create_app

    with running_server(create_app(model, n_slots=1, max_queue=0)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"needs {' and '.join(missing)} (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: webdriver.Chrome, server: Server) -> webdriver.Chrome:
    """The page, loaded fresh with nothing stored, at laptop size, once it has read /props."""
    open_fresh(browser, server)
    wait(browser).until(lambda d: d.find_element(By.ID, "model-name").text)
    return browser


def open_fresh(driver: webdriver.Chrome, server: Server) -> None:
    set_viewport(driver, *LAPTOP)
    # Cleared from another page of the same origin, so that no page of the chat is open to save.
    driver.get(f"{server.url}/health")
    driver.execute_script("localStorage.clear()")
    driver.get(f"{server.url}/")


# ---------------------------------------------------------------------------------------------
# Helpers: what a user does, and what the server says.


def wait(driver: webdriver.Chrome, timeout: float = TIMEOUT_S) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def set_viewport(driver: webdriver.Chrome, width: int, height: int) -> None:
    """The page's size in CSS pixels exactly (a window size would include the browser's frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def change_settings(driver: webdriver.Chrome, **values: str) -> None:
    """Open Settings, type each value into its field (``max_tokens="8"``), press Done."""
    driver.find_element(By.ID, "open-settings").click()
    for name, value in values.items():
        field = driver.find_element(By.ID, f"setting-{name.replace('_', '-')}")
        field.clear()
        field.send_keys(value)
    driver.find_element(By.ID, "settings-done").click()
    wait(driver).until(lambda d: not d.find_element(By.ID, "settings").get_attribute("open"))


def send_message(driver: webdriver.Chrome, text: str) -> None:
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys(text)
    prompt.send_keys(Keys.ENTER)


def messages(driver: webdriver.Chrome, role: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f"#messages .message-{role}")


def text_of(message: WebElement) -> str:
    # textContent, not .text: the characters the page holds, whatever CSS does with white space.
    return message.find_element(By.CLASS_NAME, "message-text").get_property("textContent")


def wait_for_reply(driver: webdriver.Chrome, index: int = 0, state: str = "done") -> WebElement:
    """The index-th reply, once its state is ``state``."""

    def ready(d):
        replies = messages(d, "assistant")
        return len(replies) > index and replies[index].get_attribute("data-state") == state and replies[index]

    return wait(driver).until(ready)


@contextlib.contextmanager
def slot_taken(server: Server) -> Iterator[None]:
    """Another client's long streamed reply holds the server's one slot until the block ends."""
    body = {"messages": [{"role": "user", "content": "Go on"}], "max_tokens": LONG_REPLY_TOKENS, "stream": True}
    with server.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        # Held until the end: a dropped iterator would close the stream, and the server its reply.
        lines = response.iter_lines()
        next(lines)  # the first token's event: the reply is generating
        yield
    # Leaving the stream closes the connection: the server sees its client go and frees the slot.


# ---------------------------------------------------------------------------------------------


def test_the_installed_package_holds_the_page_and_every_file_it_loads():
    import gptj_ggml

    static = Path(gptj_ggml.__file__).parent / "server" / "static"
    index = (static / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="static/([^"]+)"', index)
    assert sorted(loaded) == ["app.js", "style.css"]
    assert all((static / name).is_file() for name in loaded)


def test_a_reply_streams_stops_on_stop_frees_the_slot_and_survives_a_reload(page, server, tmp_path):
    change_settings(page, max_tokens=str(LONG_REPLY_TOKENS))
    send_message(page, "Tell me a long story.")

    reply = wait_for_reply(page, state="streaming")
    first_length = wait(page).until(lambda d: len(text_of(reply)))
    wait(page).until(lambda d: len(text_of(reply)) > first_length)
    assert reply.get_attribute("data-state") == "streaming", "the reply ended before the test could stop it"
    assert server.health()["slots_processing"] == 1

    page.find_element(By.ID, "stop").click()
    wait_for_reply(page, state="stopped")
    server.wait_until_idle()
    slots = server.http.get("/slots").json()
    assert [slot["state"] for slot in slots] == ["idle"]
    # Cut short by the Stop, not ended by max_tokens: the slot's cache holds what was generated.
    assert slots[0]["n_past"] < LONG_REPLY_TOKENS
    stopped_text = text_of(reply)
    meta = reply.find_element(By.CLASS_NAME, "message-meta").text
    assert "stopped" in meta and "tokens/s" in meta and "first token" in meta
    assert page.find_element(By.ID, "send").is_displayed() and not page.find_element(By.ID, "stop").is_displayed()
    page.save_screenshot(str(tmp_path / "stopped.png"))

    page.refresh()
    reply = wait_for_reply(page, state="stopped")
    assert [text_of(m) for m in messages(page, "user")] == ["Tell me a long story."]
    assert text_of(reply) == stopped_text
    assert page.find_element(By.CSS_SELECTOR, ".conversation-open").text == "Tell me a long story."
    page.save_screenshot(str(tmp_path / "reloaded.png"))


def test_a_finished_reply_shows_the_servers_time_to_first_token_and_speed(page):
    change_settings(page, max_tokens="8")
    send_message(page, "Hello")
    meta = wait_for_reply(page).find_element(By.CLASS_NAME, "message-meta").text
    # From the server's timings: no "≈", the mark of the browser's own measurement.
    assert "first token" in meta and "tokens/s" in meta and "≈" not in meta


RECORD_REQUESTS = """
window.chatRequests = [];
const realFetch = window.fetch;
window.fetch = (url, init) => {
  if (String(url).endsWith("v1/chat/completions")) window.chatRequests.push(JSON.parse(init.body));
  return realFetch(url, init);
};
"""


def test_the_settings_go_with_the_request_and_the_templates_come_from_the_server(page, server):
    select = page.find_element(By.ID, "setting-chat-template")
    options = [o.get_attribute("value") for o in select.find_elements(By.TAG_NAME, "option")]
    props = server.http.get("/props").json()
    assert options == props["chat_templates"] and select.get_property("value") == props["chat_template"]

    page.execute_script(RECORD_REQUESTS)
    page.find_element(By.ID, "open-settings").click()
    Select(page.find_element(By.ID, "setting-chat-template")).select_by_value("alpaca")
    page.find_element(By.ID, "settings-done").click()
    change_settings(page, system_prompt="Be brief.", temperature="0.5", top_p="0.9", max_tokens="4")
    send_message(page, "Hello")
    wait_for_reply(page)
    request = page.execute_script("return window.chatRequests[0]")
    assert request["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert request["stream"] is True and request["model"] == props["model"]
    assert (request["temperature"], request["top_p"], request["max_tokens"]) == (0.5, 0.9, 4)
    assert request["chat_template"] == "alpaca"


def test_enter_sends_and_shift_enter_makes_a_new_line(page):
    change_settings(page, max_tokens="4")
    prompt = page.find_element(By.ID, "prompt")
    prompt.send_keys("first line")
    ActionChains(page).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    prompt.send_keys("second line")
    assert prompt.get_property("value") == "first line\nsecond line"
    assert messages(page, "user") == []

    prompt.send_keys(Keys.ENTER)
    wait(page).until(lambda d: messages(d, "user"))
    assert text_of(messages(page, "user")[0]) == "first line\nsecond line"
    assert prompt.get_property("value") == ""
    wait_for_reply(page)


def test_markup_in_a_message_shows_as_text(page):
    change_settings(page, max_tokens="4")
    send_message(page, INJECTION)
    wait_for_reply(page)
    assert text_of(messages(page, "user")[0]) == INJECTION
    assert page.find_elements(By.CSS_SELECTOR, "#messages img") == []
    assert page.execute_script("return window.injected === undefined")


# The random-weight model cannot be made to write markup, so this test alone answers the page's
# chat request itself: window.fetch streams a reply holding INJECTION, in pieces cut mid-event
# and mid-tag as a network may cut them. The rest is the page's own code.
FAKE_STREAM = r"""
const contents = arguments[0];
const events = contents.map(
  (content) => `data: ${JSON.stringify({choices: [{index: 0, delta: {content}, finish_reason: null}]})}\n\n`);
events.push(`data: ${JSON.stringify({choices: [{index: 0, delta: {}, finish_reason: "stop"}]})}\n\n`);
events.push("data: [DONE]\n\n");
const wire = new TextEncoder().encode(events.join(""));
const realFetch = window.fetch;
window.fetch = (url, init) => {
  if (!String(url).endsWith("v1/chat/completions")) return realFetch(url, init);
  const body = new ReadableStream({
    start(controller) {
      for (const [start, end] of [[0, 25], [25, 90], [90, wire.length]]) controller.enqueue(wire.slice(start, end));
      controller.close();
    },
  });
  return Promise.resolve(new Response(body, {headers: {"Content-Type": "text/event-stream"}}));
};
"""


def test_markup_in_a_reply_shows_as_text_while_streaming_and_after_a_reload(page):
    contents = [INJECTION[:11], INJECTION[11:], " after it"]
    page.execute_script(FAKE_STREAM, contents)
    send_message(page, "Say something with a tag in it.")
    reply = wait_for_reply(page)
    assert text_of(reply) == "".join(contents)
    assert page.find_elements(By.CSS_SELECTOR, "#messages img") == []

    page.refresh()
    assert text_of(wait_for_reply(page)) == "".join(contents)
    assert page.find_elements(By.CSS_SELECTOR, "#messages img") == []
    assert page.execute_script("return window.injected === undefined")


def test_an_error_shows_the_servers_message_and_gives_the_message_back(page):
    change_settings(page, temperature="-1")
    send_message(page, "Hello")
    error = wait(page).until(lambda d: d.find_element(By.ID, "error-text").text)
    assert "temperature" in error
    assert page.find_element(By.ID, "prompt").get_property("value") == "Hello"
    assert messages(page, "user") == []


def test_the_api_key_field_shows_when_the_server_needs_a_key_and_the_key_is_sent(browser, keyed_server):
    open_fresh(browser, keyed_server)
    # /props answered 401: the page says so and offers the key's field.
    error = wait(browser).until(lambda d: d.find_element(By.ID, "error-text").text)
    assert "API key" in error
    browser.find_element(By.ID, "open-settings").click()
    browser.find_element(By.ID, "setting-api-key").send_keys(API_KEY)
    browser.find_element(By.ID, "setting-max-tokens").send_keys("4")
    browser.find_element(By.ID, "settings-done").click()
    wait(browser).until(lambda d: d.find_element(By.ID, "model-name").text)
    assert not browser.find_element(By.ID, "error").is_displayed()

    send_message(browser, "Hello")
    wait_for_reply(browser)
    browser.refresh()
    # Kept in the browser: the reloaded page reads /props with it at once.
    wait(browser).until(lambda d: d.find_element(By.ID, "model-name").text)
    assert browser.find_element(By.ID, "api-key-row").get_attribute("hidden") is None


def test_a_full_server_says_it_is_busy_and_ready_again(browser, full_server):
    open_fresh(browser, full_server)
    status = browser.find_element(By.ID, "server-status")
    wait(browser).until(lambda d: status.text == "ready")
    with slot_taken(full_server):
        # From the /health polls: no slot idle.
        wait(browser).until(lambda d: "busy" in status.text)
        send_message(browser, "Hello")
        # The 503: its message and when to try again.
        error = wait(browser).until(lambda d: d.find_element(By.ID, "error-text").text)
        assert error.startswith("Server busy:") and "Try again in" in error
        assert browser.find_element(By.ID, "prompt").get_property("value") == "Hello"
    wait(browser).until(lambda d: status.text == "ready")


def test_a_queued_reply_says_so_and_stop_before_its_first_token_gives_the_message_back(page, server):
    with slot_taken(server):
        send_message(page, "Hello")
        reply = wait_for_reply(page, state="streaming")
        wait(page).until(lambda d: "waiting for a free slot" in reply.find_element(By.CLASS_NAME, "message-meta").text)
        assert "queued" in page.find_element(By.ID, "server-status").text
        page.find_element(By.ID, "stop").click()
        wait(page).until(lambda d: messages(d, "user") == [])
        assert page.find_element(By.ID, "prompt").get_property("value") == "Hello"
        server.wait_until(lambda health: health["queued"] == 0, "the queued request gone")
    assert not page.find_element(By.ID, "error").is_displayed()


def test_the_controls_are_reached_by_tab_and_each_has_a_name(page):
    visited = []
    page.find_element(By.TAG_NAME, "body").click()
    for _ in range(20):
        ActionChains(page).send_keys(Keys.TAB).perform()
        visited.append(page.execute_script("return document.activeElement.id"))
    assert {"new-chat", "open-settings", "messages", "prompt", "send"} <= set(visited)
    unnamed = page.execute_script(
        "return [...document.querySelectorAll('button, textarea, input, select')]"
        ".filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))"
        ".map((e) => e.outerHTML)"
    )
    assert unnamed == []


def test_at_phone_width_nothing_scrolls_sideways(page):
    set_viewport(page, *PHONE)
    change_settings(page, max_tokens="4")
    send_message(page, "a" * 300)
    wait_for_reply(page)
    assert page.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    page.find_element(By.ID, "open-sidebar").click()
    wait(page).until(lambda d: d.find_element(By.ID, "new-chat").is_displayed())
    page.find_element(By.ID, "new-chat").click()
    wait(page).until(lambda d: d.find_element(By.ID, "empty-state").is_displayed())
    assert page.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]


def test_a_screenshot_of_a_short_conversation_at_laptop_size(page, tmp_path):
    """Saved under tmp_path; GPTJ_GGML_PAGE_SCREENSHOT=docs/chat-page.png also saves the README's."""
    change_settings(page, max_tokens="40", system_prompt="You are a helpful assistant.")
    for index, text in enumerate(["Hello! What is GPT-J?", "Can it run on a laptop CPU?"]):
        send_message(page, text)
        wait_for_reply(page, index)
    page.find_element(By.ID, "prompt").send_keys("Thanks!")
    # The status line reads the next /health poll; the reply's own figures are there already.
    wait(page).until(lambda d: d.find_element(By.ID, "server-status").get_attribute("data-state") == "ready")
    screenshot = tmp_path / "chat-page.png"
    page.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size < 200_000
    if target := os.environ.get("GPTJ_GGML_PAGE_SCREENSHOT"):
        shutil.copyfile(screenshot, target)
