#!/usr/bin/env python3
"""Single sign-on into the console in headless Chromium, through a real OpenID Connect provider.

Run by tests/it/console_oidc.rs, which starts the gateway (admin.console.oidc) and the provider
(tests/node/oidc_provider.mjs) and passes CONSOLE_URL, OIDC_URL, CONSOLE_ACCOUNT and
CONSOLE_SCREENSHOTS. Prints one PASS line per check; exits non-zero on the first failure.
Needs Debian's chromium + chromium-driver and selenium from PyPI (bash .ci/setup).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from console_chromium import make_driver  # noqa: E402
import urllib.parse

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:  # reported to the Rust test as a failure, never a skip
    sys.exit(f"selenium is not installed ({e}); run: bash .ci/setup")

BASE = os.environ["CONSOLE_URL"]
OP = os.environ["OIDC_URL"]
ACCOUNT = os.environ["CONSOLE_ACCOUNT"]
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "target/console-screenshots")


def main() -> None:
    os.makedirs(SHOTS, exist_ok=True)
    d = make_driver()
    wait = WebDriverWait(d, 15)
    try:
        d.get(f"{BASE}/console/login")
        sso = d.find_element(By.ID, "sign-in-sso")
        assert "test provider" in sso.text, sso.text
        sso.click()
        # The provider's own login page (any name; no password check in its dev interactions).
        wait.until(EC.presence_of_element_located((By.NAME, "login")))
        assert d.current_url.startswith(OP), d.current_url
        d.find_element(By.NAME, "login").send_keys("alice")
        d.find_element(By.NAME, "password").send_keys("any")
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # Consent (first sign-in of this client), then back to the console.
        def consent_or_console(drv):
            if drv.current_url.startswith(f"{BASE}/console/a/"):
                return True
            buttons = drv.find_elements(By.CSS_SELECTOR, "button[type=submit]")
            if drv.current_url.startswith(OP) and buttons and "Continue" in buttons[0].text:
                buttons[0].click()
            return False
        wait.until(consent_or_console)
        assert d.current_url == f"{BASE}/console/a/{ACCOUNT}/", d.current_url
        who = d.find_element(By.CSS_SELECTOR, "header .who").text
        assert "alice" in who, who
        print("PASS sso sign-in: the provider's id token became a console session for", ACCOUNT)
        cookie = d.get_cookie("mtls_console")
        assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie
        assert cookie["path"] == "/console", cookie
        assert d.get_cookie("mtls_console_oidc") is None, "the flow cookie outlived the sign-in"
        print("PASS session cookie HttpOnly, SameSite=Strict, Path=/console; flow cookie cleared")
        d.save_screenshot(os.path.join(SHOTS, "signin-sso.png"))

        # A callback that does not belong to a sign-in started in this browser is refused.
        d.delete_all_cookies()
        d.get(f"{BASE}/console/oidc/callback?" + urllib.parse.urlencode({"code": "x", "state": "forged"}))
        body = d.find_element(By.TAG_NAME, "body").text
        assert "did not complete" in body and d.get_cookie("mtls_console") is None, body
        print("PASS a forged callback is refused and makes no session")
        # A sign-in started here, answered with another state, is refused too.
        d.get(f"{BASE}/console/oidc/start")
        wait.until(lambda drv: drv.current_url.startswith(OP))
        d.get(f"{BASE}/console/oidc/callback?" + urllib.parse.urlencode({"code": "x", "state": "other"}))
        body = d.find_element(By.TAG_NAME, "body").text
        assert "does not belong to this sign-in" in body and d.get_cookie("mtls_console") is None, body
        print("PASS a callback with another state is refused")
        # The provider's error comes back in words.
        d.get(f"{BASE}/console/oidc/callback?error=access_denied&state=x")
        body = d.find_element(By.TAG_NAME, "body").text
        assert "access_denied" in body, body
        print("PASS the provider's error is shown")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
