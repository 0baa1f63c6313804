"""The demo chat page in a real browser: two tabs chat, a late tab sees the history, and the
page survives a node restart."""

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def wait_for(driver, predicate, timeout=15, what="condition"):
    return WebDriverWait(driver, timeout).until(lambda d: predicate(d), message=f"waiting for {what}")


def log_lines(driver):
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#log li")]


def member_names(driver):
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#members li")]


def join(driver, nick):
    wait_for(driver, lambda d: d.find_element(By.ID, "status").text.startswith("connected"), what="connected")
    driver.find_element(By.ID, "nick").send_keys(nick)
    driver.find_element(By.ID, "join-btn").click()
    wait_for(driver, lambda d: f"{nick} joined" in log_lines(d), what=f"{nick} joined")


def say(driver, text):
    box = driver.find_element(By.ID, "text")
    box.send_keys(text)
    driver.find_element(By.ID, "send-btn").click()


def test_two_tabs_chat_and_survive_a_node_restart(node, browser):
    browser.get(node.url + "/?room=browser")
    tab_a = browser.current_window_handle
    join(browser, "alice")

    browser.switch_to.new_window("tab")
    tab_b = browser.current_window_handle
    browser.get(node.url + "/?room=browser")
    join(browser, "bob")
    say(browser, "hi alice")

    browser.switch_to.window(tab_a)
    wait_for(browser, lambda d: "bob joined" in log_lines(d), what="bob joined in tab a")
    wait_for(browser, lambda d: "bob: hi alice" in log_lines(d), what="bob's message in tab a")
    say(browser, "hello bob")
    browser.switch_to.window(tab_b)
    wait_for(browser, lambda d: "alice: hello bob" in log_lines(d), what="alice's message in tab b")
    wait_for(browser, lambda d: member_names(d) == ["alice", "bob"], what="both in the member list")

    # A page that joins later (or a reload) shows the conversation so far, from history,
    # each line once.
    browser.switch_to.new_window("tab")
    browser.get(node.url + "/?room=browser")
    join(browser, "carol")
    lines = log_lines(browser)
    assert lines.index("bob: hi alice") < lines.index("alice: hello bob") < lines.index("carol joined"), lines
    assert lines.count("bob: hi alice") == 1, lines
    browser.close()
    browser.switch_to.window(tab_b)

    # Restart the node on the same port: both pages reconnect and resubscribe by themselves.
    assert node.stop() == 0, "SIGTERM drains and exits 0"
    wait_for(browser, lambda d: not d.find_element(By.ID, "status").text.startswith("connected"), what="disconnect")
    node.start()
    for tab in (tab_a, tab_b):
        browser.switch_to.window(tab)
        wait_for(browser, lambda d: d.find_element(By.ID, "status").text.startswith("connected"),
                 timeout=30, what="reconnect")
    # The client resubscribes after its welcome; give that request a moment to land.
    browser.switch_to.window(tab_a)
    browser.execute_async_script("const done = arguments[0]; setTimeout(done, 300);")
    say(browser, "still here")
    browser.switch_to.window(tab_b)
    wait_for(browser, lambda d: "alice: still here" in log_lines(d), what="message after restart")

    # A closing tab announces that it leaves.
    browser.close()
    browser.switch_to.window(tab_a)
    wait_for(browser, lambda d: "bob left" in log_lines(d), what="bob left")
    wait_for(browser, lambda d: member_names(d) == ["alice"], what="bob gone from the member list")


def test_plain_websocket_from_the_readme(node, browser):
    """The README's `new WebSocket(...)` snippet, run as-is in the browser."""
    browser.get(node.url + "/healthz")
    received = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const url = arguments[0];
        const ws = new WebSocket(url);
        const seen = [];
        ws.onmessage = (ev) => {
          const msg = JSON.parse(ev.data);
          seen.push(msg.op);
          if (msg.op === "welcome") {
            ws.send(JSON.stringify({id: 1, op: "subscribe", channel: "chat:lobby"}));
          } else if (msg.op === "ok" && msg.id === 1) {
            ws.send(JSON.stringify({id: 2, op: "publish", channel: "chat:lobby", data: {text: "hi"}}));
          } else if (msg.op === "message") {
            done({seen, data: msg.data, channel: msg.channel});
          }
        };
        ws.onerror = () => done({error: true});
        """,
        f"ws://127.0.0.1:{node.port}/ws",
    )
    assert received.get("channel") == "chat:lobby", received
    assert received["data"] == {"text": "hi"}
    assert received["seen"][0] == "welcome"
