#!/usr/bin/env python3
"""The console's pages in headless Chromium: axe-core on every page, keyboard use, no JavaScript.

Run by tests/it/console_a11y.rs (which starts the gateway with a seeded certificate and mapping
and passes CONSOLE_URL, CONSOLE_TOKEN, CONSOLE_ACCOUNT, CONSOLE_CERT_ID, CONSOLE_MAPPING_ID,
CONSOLE_P12, CONSOLE_P12_PASSWORD, AXE_JS, CONSOLE_SCREENSHOTS). Prints PASS lines; exits
non-zero on the first failure. Needs chromium, chromium-driver, selenium and tests/node's
axe-core (bash .ci/setup).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from console_chromium import make_driver  # noqa: E402

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:  # reported to the Rust test as a failure, never a skip
    sys.exit(f"selenium is not installed ({e}); run: bash .ci/setup")

BASE = os.environ["CONSOLE_URL"]
TOKEN = os.environ["CONSOLE_TOKEN"]
ACC = os.environ["CONSOLE_ACCOUNT"]
CERT = os.environ["CONSOLE_CERT_ID"]
MAPPING = os.environ["CONSOLE_MAPPING_ID"]
P12 = os.environ["CONSOLE_P12"]
P12_PASSWORD = os.environ["CONSOLE_P12_PASSWORD"]
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "target/console-screenshots")
AXE = os.environ["AXE_JS"]

PAGES = [
    ("overview", f"/console/a/{ACC}/"),
    ("certificates", f"/console/a/{ACC}/certificates"),
    ("certificate-new", f"/console/a/{ACC}/certificates/new"),
    ("certificate", f"/console/a/{ACC}/certificates/{CERT}"),
    ("certificate-delete", f"/console/a/{ACC}/certificates/{CERT}/delete"),
    ("mappings", f"/console/a/{ACC}/mappings"),
    ("mapping", f"/console/a/{ACC}/mappings/{MAPPING}"),
    ("mapping-delete", f"/console/a/{ACC}/mappings/{MAPPING}/delete"),
]


def sign_in(d: webdriver.Chrome) -> None:
    d.get(f"{BASE}/console/login")
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "sign-in").click()
    WebDriverWait(d, 10).until(lambda drv: drv.current_url.startswith(f"{BASE}/console/a/"))


def axe(d: webdriver.Chrome, name: str, src: str) -> None:
    # WebDriver's scripts are not subject to the page's Content-Security-Policy.
    d.execute_script(src)
    d.set_script_timeout(30)
    violations = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))))"
        ".catch(e => done([{id: 'axe-error', help: String(e), nodes: []}]));"
    )
    if violations:
        sys.exit(f"FAIL axe on {name}: {json.dumps(violations, indent=1)}")


def main() -> None:
    os.makedirs(SHOTS, exist_ok=True)
    src = open(AXE, encoding="utf-8").read()
    d = make_driver()
    try:
        d.get(f"{BASE}/console/login")
        axe(d, "sign-in", src)
        sign_in(d)
        for name, path in PAGES:
            d.get(BASE + path)
            assert d.find_element(By.TAG_NAME, "h1").text, f"{name}: no h1"
            axe(d, name, src)
        print(f"PASS axe: no WCAG 2.1 A/AA violation on sign-in and {len(PAGES)} pages")

        # Keyboard: the first Tab stop is the skip link; Tab reaches "Test this mapping", Enter runs it.
        d.get(f"{BASE}/console/a/{ACC}/mappings/{MAPPING}")
        body = d.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        first = d.switch_to.active_element
        assert first.get_attribute("class") == "skip" and first.get_attribute("href").endswith("#main"), first.get_attribute("outerHTML")
        for _ in range(80):
            if d.switch_to.active_element.get_attribute("id") == "test-mapping":
                break
            d.switch_to.active_element.send_keys(Keys.TAB)
        else:
            sys.exit("FAIL keyboard: #test-mapping not reached in 80 Tab presses")
        d.switch_to.active_element.send_keys(Keys.ENTER)
        result = WebDriverWait(d, 20).until(EC.presence_of_element_located((By.ID, "mapping-test-result")))
        assert result.get_attribute("data-outcome") == "ok", result.text
        print("PASS keyboard: skip link first; 'Test this mapping' reached by Tab and run by Enter (outcome ok)")
    finally:
        d.quit()

    d = make_driver(javascript=False)
    try:
        sign_in(d)
        for name, path in PAGES[:2] + PAGES[3:4] + PAGES[5:7]:
            d.get(BASE + path)
            assert d.find_element(By.TAG_NAME, "h1").text, f"{name}: no h1 without JavaScript"
            if name == "certificates":
                assert d.find_elements(By.CSS_SELECTOR, f"table#certificates tr[data-cert-id='{CERT}']"), \
                    "no certificate row without JavaScript"
            if name == "mappings":
                assert d.find_elements(By.CSS_SELECTOR, f"table#mappings tr[data-mapping-id='{MAPPING}']"), \
                    "no mapping row without JavaScript"
        print("PASS without JavaScript: read pages (overview, certificates, a certificate, mappings, a mapping)")
        d.get(f"{BASE}/console/a/{ACC}/certificates/new")
        d.find_element(By.ID, "upload-name").send_keys("nojs-upload")
        d.find_element(By.ID, "upload-file").send_keys(P12)
        d.find_element(By.ID, "upload-password").send_keys(P12_PASSWORD)
        d.find_element(By.ID, "test-file").click()
        verdict = WebDriverWait(d, 15).until(EC.presence_of_element_located((By.ID, "tester-verdict")))
        assert verdict.get_attribute("data-verdict") == "pass", verdict.text
        assert P12_PASSWORD not in d.page_source, "the password came back in the page"
        # A new page (the fallback), not the script's in-place answer: the file input is empty.
        assert d.find_element(By.ID, "upload-file").get_attribute("value") == "", "the page did not reload"
        d.save_screenshot(os.path.join(SHOTS, "tester-without-javascript.png"))
        print("PASS without JavaScript: tester verdict by a plain form post (pass), password not echoed")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
