"""The moderator page in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): a wrong token shows the login again;
the right one shows the session, a preview that changes and events as they
arrive; the "Censor whole" button is pressed. Returns what it saw."""

import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def until(what, timeout, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        got = what()
        if got:
            return got
        time.sleep(step)
    return None


def check_page(base, token, room, screenshot):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    seen = {}
    try:
        d.get(base + "/")
        login = d.find_element(By.ID, "login")

        def log_in(t):
            d.find_element(By.ID, "token").clear()
            d.find_element(By.ID, "token").send_keys(t)
            d.find_element(By.ID, "label").clear()
            d.find_element(By.ID, "label").send_keys("e2e-browser")
            login.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        log_in("not-the-token")
        seen["wrong_token_shows_login"] = bool(until(
            lambda: login.is_displayed() and "wrong token" in d.find_element(By.ID, "loginError").text, 5))
        log_in(token)
        seen["app_shown"] = bool(until(lambda: d.find_element(By.ID, "app").is_displayed(), 5))
        card = until(lambda: d.find_elements(By.ID, "room-" + room), 15)
        seen["session_shown"] = bool(card)
        img = lambda: d.find_element(By.CSS_SELECTOR, f"#room-{room} img")  # noqa: E731
        first = until(lambda: img().get_attribute("data-seq"), 10)
        later = until(lambda: (lambda s: s if s and s != first else None)(img().get_attribute("data-seq")), 10)
        seen["preview_changes"] = bool(first and later)
        button = until(lambda: d.find_elements(
            By.CSS_SELECTOR, f"#room-{room} button[data-action='censor_whole']"), 5)
        if button:
            button[0].click()
            seen["censor_whole_clicked_at"] = time.time()
        seen["censor_whole_shown"] = bool(until(lambda: d.find_elements(By.ID, "whole"), 5))
        seen["events_arrive"] = bool(until(lambda: d.find_elements(By.CSS_SELECTOR, "#events div"), 15))
        d.save_screenshot(screenshot)
        seen["screenshot"] = screenshot
    finally:
        d.quit()
    return seen
