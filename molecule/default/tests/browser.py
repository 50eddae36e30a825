"""A real headless browser for behaviour tests: Debian's chromium driven by selenium.

Unity's login pages (and everything behind them) are Vaadin applications that only a browser can
fill in. The browser runs on the controller and reaches the test containers by their addresses
on the cluster's docker network, while every URL keeps its real host name: Chromium's
--host-resolver-rules maps the names the test gives (e.g. idm.ihpc.test) to those addresses and
answers "not found" for every other name, so nothing outside the cluster is ever contacted.
TLS is verified against the site CA, which is put into a private NSS database (certutil) in a
temporary HOME; the browser never ignores certificate errors.

Needs on the controller: Debian packages chromium, chromium-driver, libnss3-tools and the
Python package selenium (requirements-dev.txt). Screenshots of every step go to
logs/screenshots/ in the repository (test artifacts).

    with Browser({"idm.ihpc.test": "172.20.0.2"}, ca_pem, "unity-alice") as b:
        b.open("https://idm.ihpc.test:2443/oauth2-as/oauth2-authz?...", "authorize")
        b.unity_login("alice", password)
        b.wait_for_url_prefix("https://hub.ihpc.test/hub/oauth_callback")

or, function style (the JupyterHub tests):

    driver = make_driver({"hub.ihpc.test": ..., "idm.ihpc.test": ...}, ca_file, shots_dir)
    login_via_unity(driver, "https://hub.ihpc.test", user, password)   # ends on a hub page
    shot(driver, "name"); quit(driver)
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

CHROMIUM = os.environ.get("IHPC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IHPC_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = pathlib.Path(__file__).resolve().parents[3] / "logs" / "screenshots"
WINDOW = "1280,900"


def missing_tools():
    """Names of what the browser needs and the controller lacks (for a plain skip message)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if not shutil.which("certutil"):
        missing.append("certutil (Debian package libnss3-tools)")
    try:
        import selenium  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        missing.append("python package selenium (requirements-dev.txt)")
    return missing


def container_address(container, network):
    """IPv4 address of a docker container on a network (the test cluster's)."""
    fmt = "{{json .NetworkSettings.Networks}}"
    out = subprocess.run(["docker", "inspect", "-f", fmt, container], check=True, capture_output=True, text=True)
    networks = json.loads(out.stdout)
    if network not in networks:
        raise RuntimeError(f"container {container} is not on network {network} (it is on {sorted(networks)})")
    return networks[network]["IPAddress"]


def _new_driver(hosts, ca_pem, home, timeout=60, window=WINDOW):
    """A headless chromium in a fresh profile under `home` that resolves only `hosts`
    ({name: address}) and trusts every certificate of `ca_pem` (through an NSS database)."""
    # selenium is imported here so that test modules can import this file and report missing tools.
    from selenium import webdriver  # pylint: disable=import-outside-toplevel
    from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel

    nssdb = os.path.join(home, ".pki", "nssdb")
    os.makedirs(nssdb)
    subprocess.run(["certutil", "-d", "sql:" + nssdb, "-N", "--empty-password"], check=True, capture_output=True)
    # Every certificate of the bundle (a site CA may come with intermediates).
    for number, pem in enumerate(re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", ca_pem, re.S)):
        one = os.path.join(home, f"ca-{number}.pem")
        pathlib.Path(one).write_text(pem + "\n")
        subprocess.run(["certutil", "-d", "sql:" + nssdb, "-A", "-n", f"site-ca-{number}", "-t", "C,,", "-i", one],
                       check=True, capture_output=True)
    rules = [f"MAP {host} {address}" for host, address in sorted(hosts.items())] + ["MAP * ~NOTFOUND"]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--window-size={window}",
                f"--user-data-dir={os.path.join(home, 'profile')}",
                f"--host-resolver-rules={','.join(rules)}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # chromium reads the NSS database from $HOME/.pki/nssdb.
    service = Service(executable_path=CHROMEDRIVER, env=dict(os.environ, HOME=home))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(max(timeout, 120))
    return driver


class Browser:
    """One headless Chromium with a fresh profile; use as a context manager."""

    def __init__(self, hosts, ca_pem, name, timeout=60):
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self.timeout = timeout
        self.step = 0
        self.home = tempfile.mkdtemp(prefix="ihpc-browser-")
        self.driver = _new_driver(hosts, ca_pem, self.home, timeout)
        self.driver.set_page_load_timeout(timeout)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is not None:
                self.screenshot("failure")
        finally:
            self.driver.quit()
            shutil.rmtree(self.home, ignore_errors=True)

    # ---- basics ---------------------------------------------------------------------------------
    @property
    def url(self):
        return self.driver.current_url

    def screenshot(self, label):
        self.step += 1
        path = SCREENSHOTS / f"{self.name}-{self.step:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.png"
        try:
            self.driver.save_screenshot(str(path))
        except Exception:  # pylint: disable=broad-except  # a screenshot never hides the real error
            return None
        return path

    def open(self, url, label):
        """Loads a page; a page that fails to load (e.g. an unreachable redirect target) keeps its URL."""
        from selenium.common.exceptions import WebDriverException  # pylint: disable=import-outside-toplevel

        try:
            self.driver.get(url)
        except WebDriverException:
            pass
        self.screenshot(label)

    def text(self):
        """The visible text of the page, including Vaadin's shadow DOM labels where they are slotted."""
        return self.driver.execute_script("return document.body ? document.body.innerText : ''") or ""

    def wait(self, condition, what, timeout=None):
        try:
            return wait_for(what, condition, timeout or self.timeout)
        except TimeoutError:
            pass
        self.screenshot("timeout")
        raise AssertionError(f"{what}: not reached within {timeout or self.timeout} s; at {self.url}: "
                             f"{self.text()[:500]!r}")

    def wait_for_url_prefix(self, prefix, timeout=None):
        return self.wait(lambda: self.url.startswith(prefix) and self.url, f"URL starting with {prefix}", timeout)

    def wait_for_text(self, pattern, timeout=None):
        regex = re.compile(pattern)
        return self.wait(lambda: regex.search(self.text()), f"text matching {pattern!r}", timeout)

    def css(self, selector):
        from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    # ---- Unity --------------------------------------------------------------------------------
    def unity_login(self, username, password):
        """Fills Unity's password login form (a Vaadin view) and presses "Sign in"."""
        user_field = self.wait(lambda: self.css("vaadin-text-field.u-passwordUsernameField input")[0],
                               "Unity's login form")
        password_field = self.css("vaadin-password-field.u-passwordField input")[0]
        self.screenshot("login-form")
        user_field.clear()
        user_field.send_keys(username)
        password_field.clear()
        password_field.send_keys(password)
        self.screenshot("login-filled")
        self.css("vaadin-button.u-passwordSignInButton")[0].click()


# ---- the function-style interface (JupyterHub tests, scripts/bench-spawn) -----------------------
def make_driver(host_map, ca_file, shots_dir, width=1280, height=900):
    """A driver for function-style tests: resolves host_map {name: ip} and trusts ca_file;
    screenshots (shot) go to shots_dir. End it with quit(driver)."""
    home = tempfile.mkdtemp(prefix="ihpc-browser-")
    driver = _new_driver(host_map, pathlib.Path(ca_file).read_text(), home, window=f"{width},{height}")
    driver.ihpc_home = home
    driver.ihpc_shots = shots_dir
    os.makedirs(shots_dir, exist_ok=True)
    return driver


def quit(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "ihpc_home", ""), ignore_errors=True)


def shot(driver, name):
    path = os.path.join(driver.ihpc_shots, f"{name}.png")
    driver.save_screenshot(path)
    return path


def wait_for(what, check, timeout=60, interval=0.5):
    """check() until it returns something truthy; raises TimeoutError naming `what`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # pylint: disable=broad-except  # pages change under our feet
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout} s" + (f" (last error: {last})" if last else ""))


def _visible(driver, css):
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel

    return [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]


def login_via_unity(driver, hub_url, user, password, shot_name=None, timeout=90):
    """Logs in at the hub through Unity's login form; returns when the browser is back on the hub."""
    driver.get(hub_url.rstrip("/") + "/hub/oauth_login")
    password_field = wait_for("Unity's login form", lambda: (_visible(driver, "input[type=password]") or [None])[0],
                              timeout)
    user_field = wait_for("Unity's user name field", lambda: next(
        (e for e in _visible(driver, "input") if e.get_attribute("type") in ("text", "email", None, "")), None), 10)
    user_field.clear()
    user_field.send_keys(user)
    password_field.clear()
    password_field.send_keys(password)
    if shot_name:
        shot(driver, shot_name)
    buttons = [b for b in _visible(driver, "vaadin-button, button, input[type=submit]")
               if "sign in" in (b.text or b.get_attribute("value") or "").lower()]
    if buttons:
        buttons[0].click()
    else:
        from selenium.webdriver.common.keys import Keys  # pylint: disable=import-outside-toplevel

        password_field.send_keys(Keys.ENTER)

    def back_on_hub():
        if driver.current_url.startswith(hub_url.rstrip("/") + "/"):
            return True
        # A consent page (when the OAuth client does not skip it): accept.
        for b in _visible(driver, "vaadin-button, button, input[type=submit]"):
            if (b.text or b.get_attribute("value") or "").strip().lower() in ("confirm", "accept", "allow", "yes"):
                b.click()
                break
        return False

    wait_for(f"the hub after logging in {user} at Unity (now at {driver.current_url})", back_on_hub, timeout)
