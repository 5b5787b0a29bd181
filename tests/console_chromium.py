"""Headless Chromium for the console's browser tests (console_browser.py, console_a11y.py,
console_oidc_browser.py): Debian's chromium and chromedriver (never selenium-manager's
downloads), flags that headless Chromium needs as root on a bare machine."""
import os
import sys

try:
    from selenium import webdriver
except ImportError as e:  # reported to the Rust test as a failure, never a skip
    sys.stderr.write(f"selenium not importable ({e}); run .ci/setup (pip selenium)\n")
    sys.exit(3)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def make_driver(javascript: bool = True) -> "webdriver.Chrome":
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            sys.stderr.write(f"{path} is missing; run .ci/setup (Debian packages chromium chromium-driver)\n")
            sys.exit(3)
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--disable-background-networking", "--disable-component-update", "--no-first-run",
              "--disable-sync", "--window-size=1280,1000", "--lang=en-US"]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        o.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=o)
    d.set_page_load_timeout(30)
    return d
