"""A real browser for the behaviour tests: Debian's chromium, driven by selenium.

Nothing is downloaded: chromium and chromium-driver are Debian packages on the controller
(scripts/bootstrap installs them), selenium comes from requirements-dev.txt. The test hosts'
names (hub.ihpc.test, idm.ihpc.test, ...) are mapped to the containers' addresses with
--host-resolver-rules, so pages are opened under the names their certificates and OAuth
clients are made for; the site CA is trusted through a private NSS database (certutil from
libnss3-tools), never with --ignore-certificate-errors.

Interface used by the tests:
    driver = browser.make_driver(host_map, ca_file, shots_dir)
    browser.login_via_unity(driver, hub_url, user, password)   # ends on a hub page
    browser.shot(driver, "name")                                # logs/screenshots/<name>.png
    browser.quit(driver)
"""

import os
import shutil
import subprocess
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM = os.environ.get("IHPC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IHPC_CHROMEDRIVER", "/usr/bin/chromedriver")


def missing_tools():
    """What the controller lacks to run a browser (empty when everything is there)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not shutil.which("certutil"):
        missing.append("certutil (libnss3-tools)")
    return missing


def make_driver(host_map, ca_file, shots_dir, width=1280, height=900):
    """A headless chromium that resolves host_map {name: ip} and trusts ca_file."""
    home = tempfile.mkdtemp(prefix="ihpc-browser-")
    nssdb = os.path.join(home, ".pki", "nssdb")
    os.makedirs(nssdb)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "ihpc-site-ca", "-t", "C,,", "-i", ca_file],
                   check=True)
    rules = ", ".join(f"MAP {name} {ip}" for name, ip in sorted(host_map.items()))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", f"--host-resolver-rules={rules}",
                f"--user-data-dir={os.path.join(home, 'profile')}", "--no-first-run",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    # chromium reads the NSS database from $HOME/.pki/nssdb.
    service = Service(CHROMEDRIVER, env=dict(os.environ, HOME=home))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
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
        except WebDriverException as e:
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout} s" + (f" (last error: {last.msg})" if last else ""))


def _visible(driver, css):
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
