#!/usr/bin/env python3
"""The web console's page flows in real headless Chromium (selenium), run by the Rust test
`console::console_in_chromium_every_page_flow` (tests/it/console.rs), which starts the gateway
(console on, HS256 tokens, a file store, an mTLS echo target) and passes everything here by
environment variables:

  CONSOLE_URL            http://127.0.0.1:PORT (the admin listener)
  CONSOLE_TOKEN          a Bearer JWT for CONSOLE_ACCOUNT
  CONSOLE_ACCOUNT        the signed-in account (acc)
  CONSOLE_OTHER_ACCOUNT  an account the token may not see; it has a certificate named
  CONSOLE_OTHER_CERT     ... this, which must never appear on a page
  CONSOLE_GOOD_P12       a usable PKCS#12 (password CONSOLE_P12_PASSWORD) from the test CA
  CONSOLE_GOOD_SERIAL    its serial, hex
  CONSOLE_BAD_P12        a PKCS#12 under another password
  CONSOLE_P12_PASSWORD   the password typed in the upload form (never shown back)
  CONSOLE_CA_CERT/_KEY   the test CA as PEM, to sign the console's CSRs with the openssl CLI
  CONSOLE_TARGET_URL     an https URL of the mTLS echo target (trusts the test CA)
  CONSOLE_WORKDIR        a directory for CSRs and signed certificates
  CONSOLE_SCREENSHOTS    where the PNGs go (one per page)
  CONSOLE_AXE_JS         axe-core's axe.min.js (tests/node): every screenshotted page is checked
                         for serious or critical WCAG 2.1 A/AA violations

Exit 0 when every flow passed; otherwise the failing assertion, the page's URL and source, and a
failure-*.png screenshot. Exit 3 when selenium is missing (run .ci/setup).
Bounded waits only (10 s).
"""
import http.server
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from console_chromium import make_driver  # noqa: E402

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:  # pragma: no cover - environment problem, reported to the Rust test
    sys.stderr.write(f"selenium not importable ({e}); run .ci/setup (pip selenium)\n")
    sys.exit(3)

WAIT = 10


def env(name):
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"{name} is not set (this script is run by tests/it/console.rs)")
    return v


class Ctx:
    """The browser, the settings, and what the flows learn on the way."""

    def __init__(self):
        self.base = env("CONSOLE_URL").rstrip("/")
        self.token = env("CONSOLE_TOKEN")
        self.account = env("CONSOLE_ACCOUNT")
        self.other = env("CONSOLE_OTHER_ACCOUNT")
        self.other_cert = env("CONSOLE_OTHER_CERT")
        self.good_p12 = env("CONSOLE_GOOD_P12")
        self.good_serial = env("CONSOLE_GOOD_SERIAL")
        self.bad_p12 = env("CONSOLE_BAD_P12")
        self.password = env("CONSOLE_P12_PASSWORD")
        self.ca_cert = env("CONSOLE_CA_CERT")
        self.ca_key = env("CONSOLE_CA_KEY")
        self.target_url = env("CONSOLE_TARGET_URL")
        self.work = env("CONSOLE_WORKDIR")
        self.shots = env("CONSOLE_SCREENSHOTS")
        os.makedirs(self.shots, exist_ok=True)
        self.driver = make_driver()
        self.driver.set_script_timeout(WAIT)
        axe = os.environ.get("CONSOLE_AXE_JS", "")
        self.axe = open(axe).read() if axe else None
        # Every page source seen by acc, for the checks across all of them.
        self.sources = []
        # Learned on the way.
        self.cert_name = "browser-partner-cert"
        self.cert_id = None
        self.map_name = "browser-partner-map"
        self.map_id = None
        self.csr_name = "browser-csr-cert"
        self.csr_id = None

    # -- navigation and waits

    def url(self, path):
        return self.base + path

    def acc(self, rest=""):
        return f"/console/a/{self.account}/{rest}"

    def get(self, path):
        self.driver.get(self.url(path))
        self.record()

    def record(self):
        src = self.driver.page_source
        self.sources.append((self.driver.current_url, src))
        assert self.token not in src, f"the token is on {self.driver.current_url}"
        assert self.password not in src, f"the PKCS#12 password is on {self.driver.current_url}"
        return src

    def wait_css(self, css, what=None):
        try:
            return WebDriverWait(self.driver, WAIT).until(
                lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0]
            )
        except TimeoutException:
            raise AssertionError(f"{what or css}: not on the page within {WAIT} s ({self.driver.current_url})")

    def wait_until(self, fn, what):
        try:
            return WebDriverWait(self.driver, WAIT).until(lambda d: fn())
        except TimeoutException:
            raise AssertionError(f"{what}: not within {WAIT} s ({self.driver.current_url})")

    def has(self, css):
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def el(self, css):
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        assert found, f"{css} is not on {self.driver.current_url}"
        return found[0]

    def click(self, css):
        self.el(css).click()

    def submit(self, css):
        """Clicks a button that posts its form, and waits until the next page replaced this one
        (so a following get() cannot cut the POST short)."""
        old = self.el("html")
        self.el(css).click()
        try:
            WebDriverWait(self.driver, WAIT).until(EC.staleness_of(old))
        except TimeoutException:
            raise AssertionError(f"{css}: no new page within {WAIT} s ({self.driver.current_url})")
        self.record()

    def type(self, css, text):
        e = self.el(css)
        e.clear()
        e.send_keys(text)

    def choose(self, css, *wanted):
        """Picks the first option of select `css` whose value or text is one of `wanted`
        (or contains it), else the first option."""
        sel = Select(self.el(css))
        for w in wanted:
            for o in sel.options:
                if o.get_attribute("value") == w or o.text.strip() == w:
                    sel.select_by_value(o.get_attribute("value"))
                    return o.get_attribute("value")
        for w in wanted:
            for o in sel.options:
                if w in o.text:
                    sel.select_by_value(o.get_attribute("value"))
                    return o.get_attribute("value")
        first = sel.options[0].get_attribute("value")
        sel.select_by_index(0)
        return first

    def shot(self, name):
        path = os.path.join(self.shots, f"{name}.png")
        assert self.driver.save_screenshot(path), f"screenshot {path}"
        print(f"   screenshot {path}")
        self.accessible(name)

    def accessible(self, name):
        """axe-core (tests/node, installed by .ci/setup) on the page as it stands: no serious or
        critical violation of WCAG 2.1 A/AA."""
        if self.axe is None:
            return
        self.driver.execute_script(self.axe)
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
            ".then(r => done({passes: r.passes.length, violations: r.violations.map(v => ({id: v.id,"
            " impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))}),"
            " e => done({passes: 0, violations: [{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]}));"
        )
        violations = result["violations"]
        print(f"   axe {name}: {result['passes']} rules passed, {len(violations)} violations")
        assert result["passes"] > 5, f"axe did not run on {name}: {result}"
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        for v in violations:
            print(f"   axe {name}: {v['impact']} {v['id']}: {v['help']} {v['nodes']}")
        assert not bad, f"accessibility violations on {name}: {bad}"

    def h1(self):
        found = self.driver.find_elements(By.TAG_NAME, "h1")
        return found[0].text.strip() if found else ""

    def notice(self, name):
        self.wait_css(f'#notice[data-notice="{name}"]', f"the notice {name!r}")

    def status(self, state):
        self.wait_css(f'#cert-status .badge[data-state="{state}"]', f"certificate status {state!r}")

    def id_from_url(self, kind):
        m = re.search(rf"/{kind}/([0-9]+)", self.driver.current_url)
        assert m, f"no {kind} id in {self.driver.current_url}"
        return m.group(1)

    # -- signing a CSR with the test CA

    def sign(self, csr_pem, tag):
        """The CSR signed by the test CA for 90 days (30 or fewer shows as "expiring soon"); the
        PEM to upload (leaf, then the CA) and the new serial."""
        csr = os.path.join(self.work, f"{tag}.csr")
        crt = os.path.join(self.work, f"{tag}.crt")
        ext = os.path.join(self.work, f"{tag}.ext")
        with open(csr, "w") as f:
            f.write(csr_pem.strip() + "\n")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
        subprocess.run(
            ["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
             "-days", "90", "-copy_extensions", "copyall", "-extfile", ext,
             "-set_serial", "0x" + secrets.token_hex(8), "-out", crt],
            check=True, capture_output=True, timeout=30,
        )
        serial = subprocess.run(
            ["openssl", "x509", "-in", crt, "-noout", "-serial"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip().split("=", 1)[1]
        with open(crt) as f, open(self.ca_cert) as g:
            return f.read().strip() + "\n" + g.read().strip() + "\n", serial


def hexnorm(s):
    """A serial as bare upper-case hex without leading zeros (pages may use colons, case)."""
    return re.sub(r"[^0-9A-F]", "", s.upper()).lstrip("0")


# ------------------------------------------------------------------ the flows


def sign_in(c):
    """a. Paste the token, land on the overview; the cookie is HttpOnly and SameSite=Strict."""
    c.get("/console/login")
    assert c.has("label[for=token]"), "the token field has a label"
    c.shot("signin")  # before the token is typed: a screenshot never shows it
    c.el("textarea#token").send_keys(c.token)
    c.submit("button#sign-in")
    c.wait_until(lambda: c.h1().startswith("Overview"), "the overview after sign-in")
    c.record()
    cookie = c.driver.get_cookie("mtls_console")
    assert cookie, "no session cookie"
    assert cookie.get("httpOnly") is True, cookie
    assert cookie.get("sameSite") == "Strict", cookie
    assert cookie.get("path") == "/console", cookie
    # HttpOnly: the page's scripts cannot read it.
    assert "mtls_console" not in c.driver.execute_script("return document.cookie"), "cookie readable by scripts"


def add_certificate(c):
    """b. The tester in place (bad file: fail with the failing checks; good file: pass), then save."""
    c.get(c.acc("certificates/new"))
    c.type("#upload-name", c.cert_name)
    c.el("#upload-file").send_keys(c.bad_p12)
    c.el("#upload-password").send_keys(c.password)
    c.click("#test-file")
    c.wait_css('#tester-result section#tester-verdict[data-verdict="fail"]', "the tester's fail verdict")
    failed = c.driver.find_elements(By.CSS_SELECTOR, '#tester-result li[data-ok="false"]')
    assert failed, "no failed check listed"
    # The page was not left: the form still holds what was typed (the script ran the tester in place).
    assert c.el("#upload-name").get_attribute("value") == c.cert_name
    c.record()
    c.shot("certificate-new-tester-fail")

    c.el("#upload-file").clear()
    c.el("#upload-file").send_keys(c.good_p12)
    c.click("#test-file")
    c.wait_css('#tester-result section#tester-verdict[data-verdict="pass"]', "the tester's pass verdict")
    assert not c.driver.find_elements(By.CSS_SELECTOR, '#tester-result li[data-ok="false"]'), \
        "a failed check on a good file"
    c.record()
    c.shot("certificate-new-tester")

    c.submit("#save-file")
    c.notice("created")
    c.status("available")
    c.record()
    c.cert_id = c.id_from_url("certificates")
    assert c.cert_name in c.h1() or c.cert_name in c.driver.page_source
    c.shot("certificate")


def certificates_list(c):
    """c. The list shows the new certificate with its serial and status."""
    c.get(c.acc("certificates"))
    row = c.wait_css(f'table#certificates tr[data-name="{c.cert_name}"]', "the new certificate's row")
    assert hexnorm(c.good_serial) in hexnorm(row.text), f"serial {c.good_serial} not in {row.text!r}"
    assert row.find_elements(By.CSS_SELECTOR, '.badge[data-state="available"]'), row.text
    assert c.has("table#certificates th[scope]"), "header cells with scope"
    c.shot("certificates")


def mapping(c):
    """d. Create a mapping to the echo target, its v2 check OK, test it (real handshake), toggle it."""
    c.get(c.acc("mappings"))
    form = "form#mapping-create "
    c.type(form + "#mapping-name", c.map_name)
    c.choose(form + "#mapping-service", "IDP", "1")
    c.type(form + "#mapping-url", c.target_url)
    c.choose(form + "#mapping-certificate", c.cert_id, c.cert_name)
    c.submit(form + "#create-mapping")
    c.wait_until(lambda: not c.driver.current_url.endswith("/mappings")
                 or c.has(f'tr[data-name="{c.map_name}"]'), "the answer to the creation")
    c.record()
    assert not c.has("#form-error"), c.el("#form-error").text

    c.get(c.acc("mappings"))
    row = c.wait_css(f'tr[data-name="{c.map_name}"]', "the new mapping's row")
    for _ in range(3):  # the check is answered from the snapshot: reload for a refresh at most
        if row.find_elements(By.CSS_SELECTOR, 'td.check-v2 .badge[data-state="ok"]'):
            break
        time.sleep(1.5)
        c.get(c.acc("mappings"))
        row = c.wait_css(f'tr[data-name="{c.map_name}"]')
    assert row.find_elements(By.CSS_SELECTOR, 'td.check-v2 .badge[data-state="ok"]'), \
        f"v2 check not ok: {row.get_attribute('outerHTML')}"
    assert row.find_elements(By.CSS_SELECTOR, 'td.enabled .badge'), "no enabled badge"
    c.shot("mappings")

    links = row.find_elements(By.CSS_SELECTOR, "a[href*='/mappings/']")
    assert links, "no link to the mapping's page"
    links[0].click()
    c.wait_css("#test-mapping", "the test button")
    c.map_id = c.id_from_url("mappings")
    c.click("#test-mapping")
    c.wait_css('section#mapping-test-result[data-outcome="ok"]', "the handshake's outcome ok")
    c.record()
    c.shot("mapping-test")

    c.get(c.acc(f"mappings/{c.map_id}"))
    c.submit("#toggle-enabled")
    c.get(c.acc("mappings"))
    c.wait_css(f'tr[data-name="{c.map_name}"] td.enabled .badge[data-state="disabled"]', "disabled on the list")
    # And back on, for the flows below.
    c.get(c.acc(f"mappings/{c.map_id}"))
    c.submit("#toggle-enabled")
    c.get(c.acc("mappings"))
    row = c.wait_css(f'tr[data-name="{c.map_name}"]')
    assert not row.find_elements(By.CSS_SELECTOR, 'td.enabled .badge[data-state="disabled"]'), "still disabled"


def csr(c):
    """e. Start a CSR, sign it with the test CA, complete it: available."""
    c.get(c.acc("certificates/new"))
    c.type("#csr-name", c.csr_name)
    c.type("#csr-cn", "browser-csr.example")
    c.type("#csr-dns", "browser-csr.example")
    key = c.el("#csr-key-type")
    if key.tag_name == "select":
        c.choose("#csr-key-type", "EC-P256")
    else:
        c.type("#csr-key-type", "EC-P256")
    c.submit("#start-csr")
    c.status("awaiting_signature")
    pem = c.el("pre#csr-pem").text
    assert "BEGIN CERTIFICATE REQUEST" in pem, pem
    c.record()
    c.csr_id = c.id_from_url("certificates")
    c.shot("csr")

    chain, _serial = c.sign(pem, "first")
    c.el("#signed-certificate").send_keys(chain)
    c.submit("#complete-csr")
    c.notice("completed")
    c.status("available")
    c.record()


def renewal(c):
    """f. Renew: pending version, sign and complete it: available again with a new serial."""
    c.get(c.acc(f"certificates/{c.csr_id}"))
    before = c.el("#cert-facts").text
    c.submit("#renew")
    c.status("renewing")
    c.wait_css("tr#pending-version", "the pending version's row")
    pem = c.el("pre#csr-pem").text
    assert "BEGIN CERTIFICATE REQUEST" in pem, pem
    c.record()
    chain, serial = c.sign(pem, "renewed")
    assert hexnorm(serial) not in hexnorm(before), "the new serial was already shown"
    c.el("#signed-certificate").send_keys(chain)
    c.submit("#complete-csr")
    c.notice("completed")
    c.status("available")
    after = c.el("#cert-facts").text
    assert hexnorm(serial) in hexnorm(after), f"serial {serial} not in #cert-facts: {after!r}"
    assert not c.has("tr#pending-version"), "still a pending version"
    c.record()


def overview(c):
    """g. The overview: expiring certificates and the snapshot's age."""
    # The list once everything is in place (the README shows it).
    c.get(c.acc("certificates"))
    c.wait_css("table#certificates", "the certificates table")
    c.shot("certificates-all")
    c.get(c.acc())
    assert c.h1().startswith("Overview"), c.h1()
    c.wait_css("#expiring", "the expiring section")
    c.wait_css("#snapshot-age", "the snapshot's age")
    c.shot("overview")


def cross_account(c):
    """h. Another account's pages are refused; its names never shown; the switcher lists acc only."""
    c.driver.get(c.url(f"/console/a/{c.other}/certificates"))
    src = c.driver.page_source
    assert "Not possible" in c.h1(), c.h1()
    assert "may not see account" in src, "the refusal says why"
    assert c.other_cert not in src
    c.get(c.acc())
    sw = c.el("#account-switch")
    assert sw.tag_name == "select", "a scoped token picks from a list"
    values = [o.get_attribute("value") for o in Select(sw).options]
    assert values == [c.account], values
    for url, src in c.sources:
        assert c.other_cert not in src, f"{c.other}'s certificate name on {url}"


class ForgedSite:
    """A page on another port of 127.0.0.1 whose form posts itself to the console on load."""

    def __init__(self, action, fields):
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields)
        page = (f'<!DOCTYPE html><html><body><form id="f" method="post" action="{action}">{inputs}'
                '</form><script>document.getElementById("f").submit()</script></body></html>').encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def enabled_state(c):
    c.get(c.acc("mappings"))
    badge = c.wait_css(f'tr[data-name="{c.map_name}"] td.enabled .badge', "the enabled badge")
    return badge.get_attribute("data-state")


def forged_form(c):
    """i. Another site's auto-submitting forms (toggle, sign-out) without the CSRF field are refused."""
    state = enabled_state(c)
    c.get(c.acc(f"mappings/{c.map_id}"))
    button = c.el("#toggle-enabled")
    form = button.find_element(By.XPATH, "./ancestor::form")
    action = form.get_attribute("action")
    fields = []
    if button.get_attribute("name"):
        fields.append((button.get_attribute("name"), button.get_attribute("value") or ""))
    for action_url, what in [(action, "toggle"), (c.url("/console/logout"), "sign-out")]:
        site = ForgedSite(action_url, fields if what == "toggle" else [])
        try:
            c.driver.get(site.url)
            c.wait_until(lambda: c.driver.current_url.startswith(c.base) and "Not possible" in c.h1(),
                         f"the refusal of the forged {what} POST")
            src = c.driver.page_source
            assert "did not come from the console" in src, f"forged {what}: not the CSRF refusal"
        finally:
            site.close()
    assert enabled_state(c) == state, "the forged toggle changed the mapping"
    # Still signed in (the forged sign-out did nothing).
    c.get(c.acc())
    assert c.h1().startswith("Overview"), c.h1()


def delete(c):
    """j. Delete names the mappings that would break first; with cascade it goes."""
    c.get(c.acc(f"certificates/{c.cert_id}"))
    c.click("#delete-certificate")
    lst = c.wait_css("ul#breaking-mappings", "the mappings that would break")
    assert c.map_name in lst.text, f"{c.map_name} not in {lst.text!r}"
    c.record()
    c.click("#cascade")
    c.submit("#confirm-delete")
    c.notice("deleted")
    c.record()
    if "/certificates" not in c.driver.current_url or not c.has("table#certificates"):
        c.get(c.acc("certificates"))
    assert not c.has(f'table#certificates tr[data-name="{c.cert_name}"]'), "still listed"


FLOWS = [sign_in, add_certificate, certificates_list, mapping, csr, renewal, overview,
         cross_account, forged_form, delete]


def main():
    c = Ctx()
    current = None
    try:
        for flow in FLOWS:
            current = flow.__name__
            print(f"== {current}: {flow.__doc__.strip().splitlines()[0]}", flush=True)
            flow(c)
        # Every page acc saw: never the token, the password or the other account's name.
        for url, src in c.sources:
            assert c.token not in src and c.password not in src and c.other_cert not in src, url
        print(f"all {len(FLOWS)} flows passed ({len(c.sources)} pages checked)")
        return 0
    except Exception:
        traceback.print_exc()
        try:
            c.driver.save_screenshot(os.path.join(c.shots, f"failure-{current}.png"))
            print(f"flow {current} failed at {c.driver.current_url}\n--- page source\n"
                  f"{c.driver.page_source[:6000]}", file=sys.stderr)
            # What the page's script saw (CSP violations, script errors).
            for entry in c.driver.get_log("browser"):
                print(f"browser console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
        except Exception as e:  # the browser itself may be gone
            print(f"no failure screenshot: {e}", file=sys.stderr)
        return 1
    finally:
        c.driver.quit()


if __name__ == "__main__":
    sys.exit(main())
