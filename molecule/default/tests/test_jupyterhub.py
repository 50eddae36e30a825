"""JupyterHub end to end, as users see it: Unity login, the spawn form, JupyterLab under the
user's own account on a login node and through Slurm, stops that leave nothing behind, two
users kept apart, hub restarts, refusals, cancelling a queued start, failure logs.

A real browser (Debian's chromium through selenium, see browser.py) runs on the controller
and opens the hub under its public name; notebook cells run through the lab's Jupyter server
API and kernel websocket (hubclient.py). Cluster facts (Slurm jobs, processes) are read on the
nodes. Screenshots of every step go to logs/screenshots/ in the repository.

Prerequisites, each checked with a plain message: the hub, Unity and UNICORE deployed by
site.yml, the real TSI (not the embedded one), and chromium, chromium-driver and certutil on
the controller (scripts/bootstrap installs them). A missing prerequisite fails the tests.
"""

import base64
import json
import os
import pathlib
import subprocess
import tempfile
import time

import pytest

import browser
from conftest import REPO, SITE_CA, ansible_var, cluster_host, group_hosts, host_fqdn, hub_host, site_model
from hubclient import HubClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

testinfra_hosts = [hub_host()]

SHOTS = REPO / "logs" / "screenshots"
CELL = "import socket, os, jupyterhub; print(socket.gethostname(), os.getuid(), jupyterhub.__version__)"


def _missing(reason):
    # site.yml deploys the whole chain and scripts/bootstrap installs the browser: a missing
    # prerequisite is a failure, never a skip.
    pytest.fail(reason)


# ---- the site, as the inventory describes it ------------------------------------------------------
@pytest.fixture(scope="module")
def site():
    """The derived site model (site_systems, site_users, site_services) and the test cluster's settings."""
    model = site_model()
    hub = hub_host()
    return {"hub": hub, "site": model["site"], "systems": model["systems"],
            "users": {u["name"]: u for u in model["users"]}, "services": model["services"],
            "secrets": pathlib.Path(ansible_var(hub, "site_secrets_dir")),
            "network": ansible_var(hub, "test_cluster_network"), "url": model["services"]["hub"]["url"]}


@pytest.fixture(scope="module", autouse=True)
def deployed(site):
    """Every test here needs the whole chain; say plainly what is missing."""
    hub = cluster_host(site["hub"])
    if hub.run("systemctl cat jupyterhub.service").rc != 0:
        _missing("JupyterHub is not deployed: site.yml should have deployed it")
    unity = site["services"]["unity"]["host"]
    if not unity or not (site["secrets"] / "unity" / "users").is_dir():
        _missing("Unity is not deployed (no generated user passwords in site_secrets_dir/unity/users)")
    gateway = site["services"]["gateway"]["host"]
    if cluster_host(gateway).run("systemctl cat unicore-gateway.service").rc != 0:
        _missing("UNICORE is not deployed: site.yml should have deployed it")
    for system in site["systems"]:
        ux = cluster_host(site["services"]["unicorex"][system]["host"]).file(
            f"/opt/unicore/unicorex-{system}/conf/tsi.config")
        if ux.exists and "tsiMode=embedded" in ux.content_string:
            _missing(f"UNICORE/X of {system} runs the embedded TSI (no TSI archive supplied): labs would not "
                     "run under the users' accounts")
    if browser.missing_tools():
        _missing("no browser on the controller: " + ", ".join(browser.missing_tools()))


def _address(name, network):
    out = subprocess.run(["docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                          name], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def net(site):
    """Public names -> container addresses, and the site CA as a file for the controller."""
    names = {}
    for name in group_hosts("all"):
        names[host_fqdn(name)] = _address(name, site["network"])
    public = site["url"].split("//", 1)[1].split("/")[0].split(":")[0]
    names[public] = _address(site["hub"], site["network"])
    ca = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)
    ca.write(cluster_host(site["hub"]).file(SITE_CA).content_string)
    ca.close()
    yield {"hosts": names, "ca": ca.name, "hub_address": names[public]}
    os.unlink(ca.name)


def password(site, user):
    path = site["secrets"] / "unity" / "users" / user
    assert path.is_file(), f"{path} is missing: the unity_idm role generates each user's password there"
    return path.read_text().strip()


class Session:
    """One user in one browser, with an API token made in that browser session."""

    def __init__(self, site, net, user):
        self.user, self.site = user, site
        self.driver = browser.make_driver(net["hosts"], net["ca"], str(SHOTS))
        self.url = site["url"]
        self.api = HubClient(self.url, net["hub_address"], net["ca"])

    def login(self, shot=None):
        browser.login_via_unity(self.driver, self.url, self.user, password(self.site, self.user), shot_name=shot)
        self.driver.get(self.url + "/hub/home")
        token = self.driver.execute_async_script("""
            var done = arguments[arguments.length - 1];
            fetch(window.jhdata.base_url + "api/users/" + arguments[0] + "/tokens", {
              method: "POST", headers: {"Content-Type": "application/json", "X-XSRFToken": window.jhdata.xsrf_token},
              body: JSON.stringify({note: "behaviour tests", expires_in: 7200})})
            .then(r => r.json()).then(j => done(j.token || JSON.stringify(j))).catch(e => done("ERROR " + e));
        """, self.user)
        assert token and len(token) > 20 and " " not in token, f"no API token for {self.user}: {token}"
        self.api.token = token
        return self

    def close(self):
        browser.quit(self.driver)


@pytest.fixture(scope="module")
def sessions(site, net):
    made = {}

    def get(user):
        if user not in made:
            made[user] = Session(site, net, user).login(shot=f"{user}-01-unity-login")
        return made[user]

    yield get
    for s in made.values():
        try:
            s.api.remove_all(s.user)
        finally:
            s.close()


def mapped_users(site, system):
    return [u for u in site["users"].values() if system in u.get("systems", {})]


def first_system(site):
    return sorted(s for s, c in site["systems"].items() if c.get("login_node_jupyter"))[0]


def nodes_of(site, system, key):
    """The hosts of a system: key "login_hosts" or "compute_hosts" (site_systems)."""
    return site["systems"][system][key]


def slurm_jobs(site, system, xlogin):
    ctl = site["systems"][system]["slurm"].get("controller") or nodes_of(site, system, "login_hosts")[0]
    out = cluster_host(ctl).check_output(f"squeue -h -u {xlogin} -o '%i|%T|%N|%j'")
    return [line.split("|") for line in out.splitlines() if line.strip()]


def lab_processes(site, system, uid):
    """Processes of that uid on the system's nodes, by host ('pgrep -a -U')."""
    found = {}
    for host in sorted(set(nodes_of(site, system, "login_hosts") + nodes_of(site, system, "compute_hosts"))):
        out = cluster_host(host).run(f"pgrep -a -U {uid}")
        if out.stdout.strip():
            found[host] = out.stdout.strip().splitlines()
    return found


def wait_gone(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = check()
        if not left:
            return
        time.sleep(2)
    pytest.fail(f"{what} still there {timeout} s after the stop: {left}")


def submit_spawn_form(s, server, target, nodes=None, runtime=None, shot_prefix=None):
    """Opens the spawn form, picks target ("<system>|login" or "<system>|<partition>"), fills in
    nodes and runtime where given and submits it; returns the time of the submit.
    server None: the form the hub shows right after login (the unnamed default lab)."""
    d = s.driver
    d.get(f"{s.url}/hub/spawn" if server is None else f"{s.url}/hub/spawn/{s.user}/{server}")
    select = Select(browser.wait_for("the spawn form", lambda: d.find_element(By.ID, "ihpc-target"), 30))
    select.select_by_value(target)
    for field, value in (("ihpc-nodes", nodes), ("ihpc-runtime", runtime)):
        if value is not None:
            el = d.find_element(By.ID, field)
            el.clear()
            el.send_keys(str(value))
    if shot_prefix:
        browser.shot(d, f"{shot_prefix}-02-spawn-form")
    started = time.time()
    d.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]").click()
    return started


def spawn_in_browser(s, server, target, nodes=None, runtime=None, shot_prefix=None, timeout=600):
    """Fills in the spawn form, submits it and waits for JupyterLab; returns the seconds it took."""
    d = s.driver
    started = submit_spawn_form(s, server, target, nodes, runtime, shot_prefix)
    progress_shot = [False]

    def lab_loaded():
        if "/spawn-pending/" in d.current_url and shot_prefix and not progress_shot[0]:
            time.sleep(1)
            browser.shot(d, f"{shot_prefix}-03-progress")
            progress_shot[0] = True
        errors = [e for e in d.find_elements(By.CSS_SELECTOR, ".spawn-error-msg, .progress-bar.bg-danger")
                  if e.is_displayed()]
        if errors:
            raise AssertionError(f"the start failed: {d.find_element(By.TAG_NAME, 'body').text[:2000]}")
        return (HubClient.lab(s.user, server or "") + "lab") in d.current_url and \
            d.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel")

    browser.wait_for(f"JupyterLab of {s.user}/{server or '(default)'}", lab_loaded, timeout, interval=1)
    elapsed = time.time() - started
    if shot_prefix:
        time.sleep(2)  # let the launcher render
        browser.shot(d, f"{shot_prefix}-04-jupyterlab")
    return elapsed


def run_cell(s, server):
    host, uid, version = s.api.run_cell(s.user, server, CELL).split()
    return host, int(uid), version


# ---- the home page's cards (roles/jupyterhub/files/templates/home.html) and the labs API ------
def wait_card(s, name, states, timeout=120):
    """The lab's card from the labs API once its state is one of states; fails with the last one."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = s.api.labs(s.user).get(name)
        if last and last["state"] in states:
            return last
        time.sleep(2)
    pytest.fail(f"the card of {s.user}/{name or '(default)'} did not reach {states} within {timeout} s; last: {last}")


def home_card(d, name):
    return d.find_element(By.CSS_SELECTOR, f".ihpc-card[data-server='{name}']")


def card_field(d, name, field):
    """The text of one field of a card on the home page ('' if the card does not show it)."""
    found = home_card(d, name).find_elements(By.CSS_SELECTOR, f"[data-field='{field}']")
    return found[0].text.strip() if found else ""


def seconds(clock):
    """Seconds of the card's time left, "[h:]mm:ss"."""
    value = 0
    for part in clock.split(":"):
        value = value * 60 + int(part)
    return value


def open_home(s):
    s.driver.get(f"{s.url}/hub/home")
    browser.wait_for("the home page's cards", lambda: s.driver.find_element(By.ID, "ihpc-home").get_attribute("data-loaded"),
                     30)


# ---- the tests --------------------------------------------------------------------------------
def test_lab_on_the_login_node_runs_as_the_user_and_stops_cleanly(site, sessions):
    """The way a user goes: log in, the spawn form, the login node, JupyterLab (default lab)."""
    system = first_system(site)
    user = mapped_users(site, system)[0]
    mapping = user["systems"][system]
    s = sessions(user["name"])
    spawn_in_browser(s, None, f"{system}|login", shot_prefix=f"{user['name']}-login-node")
    host, uid, version = run_cell(s, "")
    login_nodes = nodes_of(site, system, "login_hosts")
    assert host in login_nodes, f"the cell ran on {host}, not on a login node of {system} ({login_nodes})"
    assert uid == mapping["uid"], f"the cell ran as uid {uid}, not as {user['name']}'s {mapping['uid']}"
    hub_version = s.api.request("GET", "/hub/api/")[1]["version"]
    assert version == hub_version, f"jupyterhub-singleuser {version} differs from the hub's {hub_version}"
    assert lab_processes(site, system, uid), "no process of the user while the lab runs (wrong uid check?)"

    s.api.stop(user["name"], "")
    wait_gone(f"processes of uid {uid} on {system}", lambda: lab_processes(site, system, uid))
    assert not slurm_jobs(site, system, mapping["xlogin"])


def test_lab_through_slurm_runs_on_a_compute_node_and_stops_cleanly(site, sessions):
    system = first_system(site)
    user = mapped_users(site, system)[0]
    mapping = user["systems"][system]
    partition = next(p for p in site["systems"][system]["partitions"] if p.get("default")) \
        if any(p.get("default") for p in site["systems"][system]["partitions"]) else site["systems"][system]["partitions"][0]
    s = sessions(user["name"])
    spawn_in_browser(s, "batch", f"{system}|{partition['name']}", nodes=1, runtime=10,
                     shot_prefix=f"{user['name']}-batch")
    host, uid, _ = run_cell(s, "batch")
    compute = nodes_of(site, system, "compute_hosts")
    assert host in compute, f"the cell ran on {host}, not on a compute node of {system} ({compute})"
    assert uid == mapping["uid"]
    jobs = slurm_jobs(site, system, mapping["xlogin"])
    assert len(jobs) == 1 and jobs[0][1] == "RUNNING" and jobs[0][2] == host, jobs

    s.api.stop(user["name"], "batch")
    wait_gone(f"Slurm jobs of {mapping['xlogin']}", lambda: slurm_jobs(site, system, mapping["xlogin"]))
    wait_gone(f"processes of uid {uid} on {system}", lambda: lab_processes(site, system, uid))


def test_every_system_runs_labs_through_its_own_route(site, sessions):
    """Each HPC system (its own UNICORE/X, TSI and route to the hub) starts a lab on its login node."""
    tried = []
    for system in sorted(site["systems"]):
        conf = site["systems"][system]
        users = mapped_users(site, system)
        if not conf.get("login_node_jupyter") or not users:
            continue
        user = users[0]
        s = sessions(user["name"])
        name = f"route-{system}"[:30]
        status, body = s.api.start(s.user, name, {"system": system, "target": "login"})
        assert status in (201, 202), (system, status, body)
        try:
            s.api.wait_ready(s.user, name)
            host, uid, _ = run_cell(s, name)
            assert host in nodes_of(site, system, "login_hosts"), (system, host)
            assert uid == user["systems"][system]["uid"], (system, uid)
            tried.append(f"{system} ({conf['jupyter_route']})")
        finally:
            s.api.stop(s.user, name)
    # Read by the side effect, which runs this test again with the system 'ext' (route direct).
    print("ROUTES tried: " + ", ".join(tried))
    assert len(tried) >= 2, f"the test inventory should offer login-node labs on two systems; tried {tried}"
    routes = {site["systems"][name]["jupyter_route"] for name in site["systems"]}
    assert {t.split("(")[1].rstrip(")") for t in tried} == routes, f"every route of the inventory ({routes}) tried: {tried}"


def test_two_users_each_run_as_themselves_and_cannot_open_the_others_lab(site, sessions):
    system = first_system(site)
    users = mapped_users(site, system)[:2]
    assert len(users) == 2, f"the test inventory needs two users mapped on {system}"
    a, b = (sessions(u["name"]) for u in users)
    for s in (a, b):
        status, body = s.api.start(s.user, "lab", {"system": system, "target": "login"})
        assert status in (201, 202), (s.user, status, body)
    for s, u in ((a, users[0]), (b, users[1])):
        s.api.wait_ready(s.user, "lab")
        host, uid, _ = run_cell(s, "lab")
        assert uid == u["systems"][system]["uid"], (s.user, uid)
    # Each user's token is refused by the other's lab, and so is each user's browser.
    for s, other in ((a, b), (b, a)):
        status, _ = s.api.request("GET", HubClient.lab(other.user, "lab") + "api/status")
        assert status == 403, f"{s.user} got {status} from {other.user}'s lab"
        s.driver.get(f"{s.url}/user/{other.user}/lab/lab")
        browser.wait_for("the refusal page", lambda: "403" in s.driver.find_element(By.TAG_NAME, "body").text, 30)
        browser.shot(s.driver, f"{s.user}-05-refused-{other.user}")
    for s in (a, b):
        s.api.stop(s.user, "lab")


def route_systems(site):
    """One system with login-node labs per route of the inventory: {route: system}."""
    found = {}
    for name, conf in sorted(site["systems"].items()):
        if conf.get("login_node_jupyter") and mapped_users(site, name):
            found.setdefault(conf["jupyter_route"], name)
    return found


def test_a_hub_restart_keeps_running_labs_reachable(site, sessions):
    """One lab per route (ssh: the tunnels are the hub's children; unicore: its listeners), one restart."""
    labs = {}
    for route, system in sorted(route_systems(site).items()):
        user = mapped_users(site, system)[0]
        s = sessions(user["name"])
        name = f"restart-{system}"[:30]
        status, body = s.api.start(s.user, name, {"system": system, "target": "login"})
        assert status in (201, 202), (system, status, body)
        labs[system] = (s, name, user["systems"][system]["uid"])
    jupyter = lambda procs: sorted(p for ps in procs.values() for p in ps if "jupyterhub-singleuser" in p)  # noqa: E731
    before = {}
    for system, (s, name, uid) in labs.items():
        s.api.wait_ready(s.user, name)
        before[system] = jupyter(lab_processes(site, system, uid))
    hub = cluster_host(site["hub"])
    hub.run_expect([0], "systemctl restart jupyterhub.service")
    # An SSH-route lab may answer through the proxy before the hub's own API is back.
    wait_hub(site)
    for system, (s, name, uid) in labs.items():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if s.api.request("GET", HubClient.lab(s.user, name) + "api/status", timeout=10)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(2)
        else:
            pytest.fail(f"the lab on {system} ({site['systems'][system]['jupyter_route']}) did not answer through the hub "
                        "within 120 s of the hub restart")
        host, got_uid, _ = run_cell(s, name)
        assert got_uid == uid
        assert s.api.server(s.user, name)["ready"]
        # The very same lab (same processes), not a new start.
        assert jupyter(lab_processes(site, system, uid)) == before[system], system
    for system, (s, name, uid) in labs.items():
        s.api.stop(s.user, name)


def test_an_unmapped_user_is_refused_on_the_spawn_page_within_seconds(site, sessions):
    systems = set(site["systems"])
    candidates = [(u, sorted(systems - set(u.get("systems", {})))) for u in site["users"].values()]
    user, missing = next(((u, m) for u, m in candidates if m and u.get("systems")), (None, None))
    assert user, "the test inventory needs a user who is mapped on one system and not on another"
    system = missing[0]
    display = site["systems"][system]["display_name"]
    s = sessions(user["name"])
    d = s.driver
    d.get(f"{s.url}/hub/spawn/{s.user}/refused")
    select = browser.wait_for("the spawn form", lambda: d.find_element(By.ID, "ihpc-target"), 30)
    offered = [o.get_attribute("value") for o in select.find_elements(By.TAG_NAME, "option")]
    assert not any(v.startswith(system + "|") for v in offered), f"the form offers {system} to {s.user}: {offered}"
    # A crafted request for it, as a hand-made form post would send it.
    target = "login" if site["systems"][system].get("login_node_jupyter") else site["systems"][system]["partitions"][0]["name"]
    d.execute_script("""var o = document.createElement('option'); o.value = arguments[0]; o.text = 'crafted';
                        var s = document.getElementById('ihpc-target'); s.appendChild(o); s.value = arguments[0];""",
                     f"{system}|{target}")
    started = time.time()
    d.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]").click()
    message = browser.wait_for("the refusal on the spawn page", lambda: next(
        (e.text for e in d.find_elements(By.CSS_SELECTOR, ".spawn-error-msg") if "no account" in e.text), None), 15)
    elapsed = time.time() - started
    browser.shot(d, f"{s.user}-06-unmapped-{system}")
    assert f"{s.user} has no account on {display} ({system})" in message
    assert elapsed < 10, f"the refusal took {elapsed:.1f} s"
    assert not s.api.server(s.user, "refused")
    s.api.remove_all(s.user)


def wait_hub(site, timeout=120):
    hub = cluster_host(site["hub"])
    deadline = time.time() + timeout
    while time.time() < deadline:
        if hub.run("python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:8081/hub/api/\")'").rc == 0:
            return
        time.sleep(2)
    pytest.fail(f"the hub did not answer within {timeout} s of its restart")


def test_a_start_that_unicore_refuses_fails_on_the_spawn_page_within_seconds(site, sessions):
    """The inventory and UNICORE's user mapping disagree: the hub offers a system (here: told
    so by a drop-in in conf.d, removed afterwards), UNICORE/X has no mapping for the user."""
    candidates = [(u, sorted(set(site["systems"]) - set(u.get("systems", {})))) for u in site["users"].values()]
    user, missing = next(((u, m) for u, m in candidates if m and u.get("systems")), (None, None))
    assert user, "the test inventory needs a user who is mapped on one system and not on another"
    system = missing[0]
    conf = site["systems"][system]
    target = "login" if conf.get("login_node_jupyter") else conf["partitions"][0]["name"]
    hub = cluster_host(site["hub"])
    dropin = "/etc/jupyterhub/conf.d/zz-behaviour-test-unicore-refusal.py"
    code = (f"import ihpc_hub\nihpc_hub.SETTINGS['users'].setdefault({user['name']!r}, {{}})[{system!r}] = "
            f"{{'projects': []}}\n")
    encoded = base64.b64encode(code.encode()).decode()
    hub.run_expect([0], f"echo {encoded} | base64 -d > {dropin} && chgrp jupyterhub {dropin} && chmod 0640 {dropin}"
                        " && systemctl restart jupyterhub.service")
    try:
        wait_hub(site)
        s = sessions(user["name"])
        d = s.driver
        started = submit_spawn_form(s, "unmapped", f"{system}|{target}",
                                    runtime=None if target == "login" else 5)
        shown = browser.wait_for("UNICORE's refusal on the page", lambda: next(
            (e.text for e in d.find_elements(By.CSS_SELECTOR, ".spawn-error-msg, #progress-message, #progress-log")
             if "does not know your account" in e.text), None), 30)
        elapsed = time.time() - started
        browser.shot(d, f"{s.user}-10-unicore-refused-{system}")
        assert conf["display_name"] in shown
        assert elapsed < 15, f"UNICORE's refusal took {elapsed:.1f} s to reach the page"
        assert not (s.api.server(s.user, "unmapped") or {}).get("ready")
        s.api.remove_all(s.user)
    finally:
        hub.run(f"rm -f {dropin} && systemctl restart jupyterhub.service")
        wait_hub(site)


def test_values_outside_the_partition_limits_are_refused_before_submission(site, sessions):
    system = first_system(site)
    user = mapped_users(site, system)[0]
    part = site["systems"][system]["partitions"][0]
    s = sessions(user["name"])
    before = slurm_jobs(site, system, user["systems"][system]["xlogin"])
    too_many = (part.get("max_nodes") or 1000) + 1
    status, body = s.api.start(s.user, "limits", {"system": system, "target": part["name"], "nodes": too_many,
                                                  "runtime": 5})
    assert status == 400 and f"not {too_many}" in json.dumps(body), (status, body)
    if part.get("max_runtime_minutes"):
        status, body = s.api.start(s.user, "limits", {"system": system, "target": part["name"], "nodes": 1,
                                                      "runtime": part["max_runtime_minutes"] + 1})
        assert status == 400 and "minutes" in json.dumps(body), (status, body)
    assert not s.api.server(s.user, "limits")
    assert slurm_jobs(site, system, user["systems"][system]["xlogin"]) == before
    s.api.remove_all(s.user)


def test_a_queued_start_shows_progress_and_can_be_cancelled(site, sessions):
    system = first_system(site)
    user = mapped_users(site, system)[0]
    xlogin = user["systems"][system]["xlogin"]
    part = site["systems"][system]["partitions"][0]["name"]
    compute = nodes_of(site, system, "compute_hosts")
    login = cluster_host(nodes_of(site, system, "login_hosts")[0])
    # Fill every compute node of the partition, so that the lab's job has to wait.
    blocker = login.check_output(f"su -s /bin/bash {xlogin} -c 'cd /tmp && sbatch --parsable -p {part} "
                                 f"-N {len(compute)} -t 10 --wrap \"sleep 600\"'").strip()
    try:
        s = sessions(user["name"])
        d = s.driver
        submit_spawn_form(s, "queued", f"{system}|{part}")
        browser.wait_for("the progress page", lambda: "/spawn-pending/" in d.current_url, 60)
        browser.wait_for("the queue state on the progress page",
                         lambda: "PENDING" in d.find_element(By.ID, "progress-message").text, 120)
        browser.shot(d, f"{s.user}-07-queued-progress")
        queued = [j for j in slurm_jobs(site, system, xlogin) if j[0] != blocker]
        assert len(queued) == 1 and queued[0][1] == "PENDING", queued
        d.find_element(By.ID, "ihpc-cancel").click()
        browser.wait_for("the home page after cancelling", lambda: d.current_url.endswith("/hub/home"), 60)
        browser.shot(d, f"{s.user}-08-cancelled")
        wait_gone("the lab's queued Slurm job",
                  lambda: [j for j in slurm_jobs(site, system, xlogin) if j[0] != blocker], 60)
        assert not (s.api.server(s.user, "queued") or {}).get("ready")
        s.api.remove_all(s.user)
    finally:
        login.run(f"scancel {blocker}")


def test_a_failed_start_shows_the_job_logs(site, sessions):
    system = first_system(site)
    user = mapped_users(site, system)[0]
    xlogin = user["systems"][system]["xlogin"]
    login = cluster_host(nodes_of(site, system, "login_hosts")[0])
    home = login.check_output(f"getent passwd {xlogin} | cut -d: -f6").strip()
    marker = "ihpc-test: this lab must not start"
    conf = f"{home}/.jupyter/jupyter_server_config.py"
    login.run_expect([0], f"su -s /bin/bash {xlogin} -c 'mkdir -p {home}/.jupyter && "
                          f"echo \"raise SystemExit(\\\"{marker}\\\")\" > {conf}'")
    try:
        s = sessions(user["name"])
        d = s.driver
        submit_spawn_form(s, "broken", f"{system}|login")

        def failure_shown():
            body = d.find_element(By.TAG_NAME, "body")
            for details in d.find_elements(By.TAG_NAME, "details"):
                d.execute_script("arguments[0].open = true", details)
            return marker in body.text and "ended before JupyterLab was up" in body.text

        browser.wait_for("the failure with the job's stderr on the page", failure_shown, 180, interval=2)
        browser.shot(d, f"{s.user}-09-failed-start-logs")
        assert not (s.api.server(s.user, "broken") or {}).get("ready")
        # The home page keeps a card in state "failed"; its logs show the job's stderr.
        card = wait_card(s, "broken", ("failed",), 60)
        assert "ended before JupyterLab was up" in card["reason"], card
        d.get(f"{s.url}/hub/home")
        browser.wait_for("the failed card", lambda: card_field(d, "broken", "state") == "Failed", 30)
        browser.shot(d, f"{s.user}-10-failed-card")
        home_card(d, "broken").find_element(By.CSS_SELECTOR, "[data-action=logs]").click()
        stderr = browser.wait_for("the failed lab's stderr in its logs view", lambda: next(
            (e.text for e in d.find_elements(By.ID, "ihpc-log-stderr") if marker in e.text), None), 60)
        browser.shot(d, f"{s.user}-11-failed-logs")
        assert "Starting JupyterLab for" in stderr
        status, logs = s.api.request("GET", f"/hub/api/ihpc/users/{s.user}/logs?server=broken")
        assert status == 200 and marker in logs["stderr"]["text"] and logs["unicore_log"], (status, logs)
        s.api.remove_all(s.user)
    finally:
        login.run(f"rm -f {conf}")


# ---- the ssh route (jupyter_route: ssh): tunnels, their key's limits, login-node restarts -------
def ssh_system(site):
    found = sorted(s for s, c in site["systems"].items() if c["jupyter_route"] == "ssh" and c.get("login_node_jupyter"))
    assert found, "the test inventory should put a system with login-node labs on jupyter_route ssh"
    return found[0]


def tunnel_listeners(site):
    """Loopback ports the hub's user listens on (the hub, the proxy's API, one SSH forward per lab
    on the ssh route; the root in the container may not read other users' /proc/<pid>/fd)."""
    hub = cluster_host(site["hub"])
    uid = hub.check_output("id -u $(systemctl show -P User jupyterhub.service)").strip()
    ports = []
    for line in hub.file("/proc/net/tcp").content_string.splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[7] == uid and f[1].startswith("0100007F:"):
            ports.append(int(f[1].split(":")[1], 16))
    return sorted(ports)


def tunnel_ssh(site, system, args, timeout=30):
    """ssh from the hub host with the hub's tunnel key and pinned known_hosts, as the tunnel account."""
    conf = site["systems"][system]
    login = host_fqdn(nodes_of(site, system, "login_hosts")[0])
    base = ("ssh -F /dev/null -i /etc/jupyterhub/ssh/tunnel-key -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/jupyterhub/ssh/known_hosts "
            f"-o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10 -p {conf['jupyter_tunnel_ssh_port']} "
            f"-l {conf['jupyter_tunnel_account']}")
    return cluster_host(site["hub"]).run(f"timeout {timeout} {base} {args} {login} </dev/null")


def test_the_ssh_route_adds_a_forward_per_lab_and_removes_it_at_stop(site, sessions):
    system = ssh_system(site)
    user = mapped_users(site, system)[0]
    s = sessions(user["name"])
    before = tunnel_listeners(site)
    status, body = s.api.start(s.user, "tunnel", {"system": system, "target": "login"})
    assert status in (201, 202), (status, body)
    try:
        s.api.wait_ready(s.user, "tunnel")
        host, uid, _ = run_cell(s, "tunnel")
        assert host in nodes_of(site, system, "login_hosts") and uid == user["systems"][system]["uid"], (host, uid)
        during = tunnel_listeners(site)
        added = sorted(set(during) - set(before))
        assert len(added) == 1, f"one new SSH forward on the hub for the lab, found {added} (before {before}, during {during})"
    finally:
        s.api.stop(s.user, "tunnel")
    wait_gone("the lab's SSH forward on the hub", lambda: [p for p in tunnel_listeners(site) if p in added], timeout=30)


def test_the_tunnel_key_forwards_to_its_systems_nodes_only_and_runs_nothing(site):
    system = ssh_system(site)
    conf = site["systems"][system]
    # No command, no shell, no pty: the forced command (or the account's nologin) answers instead.
    r = tunnel_ssh(site, system, "id")
    assert r.rc != 0 and "uid=" not in r.stdout, f"the tunnel key ran a command: rc {r.rc} {r.stdout!r} {r.stderr!r}"
    r = tunnel_ssh(site, system, "-tt")
    assert "PTY allocation request failed" in r.stderr and "uid=" not in r.stdout, (r.rc, r.stdout, r.stderr)
    # Forwarding to a host outside the system: refused by sshd (permitopen), for each of them.
    others = {"the hub": (site["hub"], 443), "Unity": (site["services"]["unity"]["host"], site["services"]["unity"]["port"]),
              "the UNICORE host": (site["services"]["gateway"]["host"], site["services"]["gateway"]["port"])}
    for name, other in site["systems"].items():
        if name != system:
            others[f"system {name}"] = (other["login_hosts"][0], 22)
    for what, (host, port) in others.items():
        for target in {host, host_fqdn(host)}:
            r = tunnel_ssh(site, system, f"-W {target}:{port}")
            assert r.rc != 0 and "administratively prohibited" in r.stderr, \
                f"the tunnel key could open {target}:{port} ({what}): rc {r.rc} {r.stderr!r}"
    # ... while the system's own nodes are open to it: the login node's sshd answers with its banner.
    login = conf["login_hosts"][0]
    r = tunnel_ssh(site, system, f"-W {login}:{conf['jupyter_tunnel_ssh_port']}", timeout=5)
    assert "administratively prohibited" not in r.stderr and r.stdout.startswith("SSH-2.0-"), (r.rc, r.stdout, r.stderr)
    # The account has no password to log in with.
    status = cluster_host(login).check_output(f"passwd -S {conf['jupyter_tunnel_account']}").split()
    assert status[1] == "L", f"the tunnel account's password is not locked: {status}"


def test_the_ssh_route_works_again_after_the_login_node_restarts(site, sessions):
    """docker restart of the login node: its sshd (and the hub's SSH connection) go away; the next start works."""
    system = ssh_system(site)
    user = mapped_users(site, system)[0]
    s = sessions(user["name"])
    login = nodes_of(site, system, "login_hosts")[0]
    status, body = s.api.start(s.user, "before", {"system": system, "target": "login"})
    assert status in (201, 202), (status, body)
    s.api.wait_ready(s.user, "before")
    run_cell(s, "before")
    subprocess.run(["docker", "restart", login], check=True, capture_output=True, timeout=180)
    units = "ssh.service unicore-tsi.service munge.service"
    deadline = time.time() + 180
    while time.time() < deadline:
        r = subprocess.run(["docker", "exec", login, "systemctl", "is-active", *units.split()], capture_output=True, text=True)
        if r.returncode == 0:
            break
        time.sleep(2)
    else:
        pytest.fail(f"{login} did not bring up {units} within 180 s of its restart: {r.stdout}")
    s.api.stop(s.user, "before")
    # UNICORE/X marks a TSI it lost unavailable for a while and fails jobs meanwhile (with a
    # clear start error); the route must work as soon as UNICORE does: retried for 3 minutes.
    deadline, failures = time.time() + 180, []
    while True:
        status, body = s.api.start(s.user, "after", {"system": system, "target": "login"})
        try:
            assert status in (201, 202), (status, body)
            s.api.wait_ready(s.user, "after", timeout=120)
            host, uid, _ = run_cell(s, "after")
            assert host == login and uid == user["systems"][system]["uid"], (host, uid)
            break
        except (AssertionError, RuntimeError, TimeoutError) as e:
            failures.append(str(e)[:200])
            if time.time() > deadline:
                pytest.fail(f"no lab on {login} within 180 s of its restart: {failures}")
            time.sleep(2)
        finally:
            s.api.stop(s.user, "after")
    print(f"starts that failed after the restart of {login} before one worked: {len(failures)} {failures}")


# ---- the home page: a card per lab, its logs, stop and start again ------------------------------
@pytest.fixture(scope="class")
def two_labs(site, sessions):
    """One user with a login-node lab and a batch lab on the same system (for TestHomePage)."""
    system = first_system(site)
    user = mapped_users(site, system)[0]
    mapping = user["systems"][system]
    part = next((p for p in site["systems"][system]["partitions"] if p.get("default")),
                site["systems"][system]["partitions"][0])
    s = sessions(user["name"])
    s.api.remove_all(s.user)
    # The batch lab through the form's name field (the default form), the login one through the API.
    d = s.driver
    d.get(f"{s.url}/hub/spawn")
    browser.wait_for("the spawn form", lambda: d.find_element(By.ID, "ihpc-name"), 30).send_keys("home-batch")
    Select(d.find_element(By.ID, "ihpc-target")).select_by_value(f"{system}|{part['name']}")
    runtime = d.find_element(By.ID, "ihpc-runtime")
    runtime.clear()
    runtime.send_keys("10")
    d.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]").click()
    browser.wait_for("the named lab's progress page", lambda: f"/spawn-pending/{s.user}/home-batch" in d.current_url, 30)
    status, body = s.api.start(s.user, "home-login", {"system": system, "target": "login"})
    assert status in (201, 202), (status, body)
    s.api.wait_ready(s.user, "home-batch")
    s.api.wait_ready(s.user, "home-login")
    yield {"s": s, "system": system, "user": user, "mapping": mapping, "partition": part["name"]}
    s.api.remove_all(s.user)


class TestHomePage:
    """The home page of a user with a login-node lab and a batch lab (the two_labs fixture)."""

    def test_cards_show_where_each_lab_runs_its_job_and_a_time_left_that_counts_down(self, site, two_labs):
        s, system, mapping = two_labs["s"], two_labs["system"], two_labs["mapping"]
        jobs = slurm_jobs(site, system, mapping["xlogin"])
        assert len(jobs) == 1 and jobs[0][1] == "RUNNING", jobs
        job_id, node = jobs[0][0], jobs[0][2]
        d = s.driver
        open_home(s)
        browser.wait_for("both cards running", lambda: card_field(d, "home-batch", "state") == "Running"
                         and card_field(d, "home-login", "state") == "Running", 30)
        display = site["systems"][system]["display_name"]
        assert card_field(d, "home-batch", "system") == f"{display} ({system})"
        assert card_field(d, "home-batch", "where") == f"partition {two_labs['partition']}"
        assert card_field(d, "home-batch", "job-id") == job_id
        assert card_field(d, "home-batch", "node-list") == node
        assert card_field(d, "home-batch", "nodes") == "1" and card_field(d, "home-batch", "runtime") == "10 min"
        assert card_field(d, "home-login", "where") == "login node"
        assert card_field(d, "home-login", "node-list") in [host_fqdn(h) for h in nodes_of(site, system, "login_hosts")] +             nodes_of(site, system, "login_hosts")
        assert not card_field(d, "home-login", "job-id") and not card_field(d, "home-login", "time-left")
        first = seconds(card_field(d, "home-batch", "time-left"))
        assert 0 < first <= 600, first
        time.sleep(3)
        second = seconds(card_field(d, "home-batch", "time-left"))
        assert 1 <= first - second <= 5, f"the time left went from {first} to {second} s in 3 s"
        # Ten minutes of runtime: the card warns that it ends soon.
        assert "The runtime ends in" in card_field(d, "home-batch", "ending")
        browser.shot(d, f"{s.user}-12-home-cards")
        # The same through the REST API, with the user's token (as a script would read it).
        cards = s.api.labs(s.user)
        assert cards["home-batch"]["job_id"] == job_id and cards["home-batch"]["node_list"] == node
        assert cards["home-batch"]["state"] == "running" and 0 < cards["home-batch"]["time_left_seconds"] <= 600
        assert (cards["home-login"]["system"], cards["home-login"]["target"]) == (system, "login")
        # The batch lab's logs: the start script's output, read through UNICORE.
        home_card(d, "home-batch").find_element(By.CSS_SELECTOR, "[data-action=logs]").click()
        stderr = browser.wait_for("the start script's output in the logs view", lambda: next(
            (e.text for e in d.find_elements(By.ID, "ihpc-log-stderr") if "Starting JupyterLab for" in e.text), None), 60)
        assert f"(server home-batch) on {node}" in stderr, stderr[:500]
        assert d.find_element(By.ID, "ihpc-log-unicore").text.strip()
        browser.shot(d, f"{s.user}-13-lab-logs")
        # The same over the API: all of stderr, or its last KiB.
        status, logs = s.api.request("GET", f"/hub/api/ihpc/users/{s.user}/logs?server=home-batch&all=1")
        assert status == 200 and "Starting JupyterLab for" in logs["stderr"]["text"], (status, logs)
        full = logs["stderr"]
        status, logs = s.api.request("GET", f"/hub/api/ihpc/users/{s.user}/logs?server=home-batch&tail=1024")
        tail = logs["stderr"]
        assert status == 200 and tail["truncated"] and tail["size"] > 1024 and len(tail["text"].encode()) <= 1024, tail
        # The size is the whole file's (the lab logs on, so it may have grown since).
        assert tail["size"] >= full["size"] == len(full["text"].encode()), (tail["size"], full["size"])

    def test_one_user_never_sees_anothers_cards_or_logs(self, site, sessions, two_labs):
        s, system = two_labs["s"], two_labs["system"]
        other = next(u for u in mapped_users(site, system) if u["name"] != s.user)
        o = sessions(other["name"])
        for path in (f"/hub/api/ihpc/users/{s.user}/labs", f"/hub/api/ihpc/users/{s.user}/logs?server=home-batch",
                     f"/hub/api/ihpc/users/{s.user}/logs?server=home-login&all=1"):
            status, body = o.api.request("GET", path)
            assert status in (403, 404), f"{o.user} got {status} from {path}: {str(body)[:300]}"
            assert "Starting JupyterLab" not in json.dumps(body)
        assert not set(o.api.labs(o.user)) & {"home-batch", "home-login"}
        o.driver.get(f"{o.url}/hub/labs/{s.user}/logs?server=home-batch")
        text = browser.wait_for("the refusal page", lambda: next(
            (t for t in [o.driver.find_element(By.TAG_NAME, "body").text] if "403" in t or "404" in t), None), 30)
        assert "Starting JupyterLab" not in text
        browser.shot(o.driver, f"{o.user}-06-refused-logs-of-{s.user}")

    def test_stop_ends_only_that_lab_and_start_again_reuses_its_choices(self, site, two_labs):
        s, system, mapping = two_labs["s"], two_labs["system"], two_labs["mapping"]
        d = s.driver
        open_home(s)
        browser.wait_for("the batch card", lambda: card_field(d, "home-batch", "state") == "Running", 30)
        home_card(d, "home-batch").find_element(By.CSS_SELECTOR, "[data-action=stop]").click()
        wait_gone(f"Slurm jobs of {mapping['xlogin']}", lambda: slurm_jobs(site, system, mapping["xlogin"]), 90)
        card = wait_card(s, "home-batch", ("stopped",), 60)
        assert card["options"]["runtime"] == 10
        browser.wait_for("the stopped card", lambda: card_field(d, "home-batch", "state") == "Stopped", 30)
        browser.shot(d, f"{s.user}-14-one-lab-stopped")
        # The other lab runs on, untouched.
        assert s.api.server(s.user, "home-login")["ready"]
        assert run_cell(s, "home-login")[1] == mapping["uid"]
        # "Start again": the same choices, no form.
        home_card(d, "home-batch").find_element(By.CSS_SELECTOR, "[data-action=start-again]").click()
        browser.wait_for("the progress page of the new start",
                         lambda: f"/spawn-pending/{s.user}/home-batch" in d.current_url or "/user/" in d.current_url, 30)
        s.api.wait_ready(s.user, "home-batch")
        host, uid, _ = run_cell(s, "home-batch")
        assert host in nodes_of(site, system, "compute_hosts") and uid == mapping["uid"], (host, uid)
        model = s.api.server(s.user, "home-batch")
        assert (model["user_options"]["target"], model["user_options"]["runtime"]) == (two_labs["partition"], 10), model
        jobs = slurm_jobs(site, system, mapping["xlogin"])
        assert len(jobs) == 1 and jobs[0][1] == "RUNNING", jobs
        # The form remembers the last choice: a new lab's form has it pre-selected.
        d.get(f"{s.url}/hub/spawn/{s.user}/home-third")
        select = Select(browser.wait_for("the spawn form", lambda: d.find_element(By.ID, "ihpc-target"), 30))
        assert select.first_selected_option.get_attribute("value") == f"{system}|{two_labs['partition']}"
        assert d.find_element(By.ID, "ihpc-runtime").get_attribute("value") == "10"
        browser.shot(d, f"{s.user}-15-form-remembers")


# ---- idle labs end: jupyterhub-idle-culler with the system's limit --------------------------------
def test_the_idle_culler_stops_an_idle_lab_and_keeps_busy_and_watched_ones(site, sessions):
    culled = sorted(n for n, c in site["systems"].items() if 0 < c["jupyter_idle_timeout_minutes"] <= 5
                    and c.get("login_node_jupyter") and mapped_users(site, n))
    assert culled, "the test inventory should give a system with login-node labs an idle limit of a few minutes"
    system = culled[0]
    limit = site["systems"][system]["jupyter_idle_timeout_minutes"] * 60
    user = mapped_users(site, system)[0]
    xlogin = user["systems"][system]["xlogin"]
    part = site["systems"][system]["partitions"][0]["name"]
    s = sessions(user["name"])
    s.api.remove_all(s.user)
    starts = {"idle-batch": {"system": system, "target": part, "nodes": 1, "runtime": 30},
              "busy": {"system": system, "target": "login"}, "watched": {"system": system, "target": "login"}}
    for name, options in starts.items():
        status, body = s.api.start(s.user, name, options)
        assert status in (201, 202), (name, status, body)
    try:
        s.api.wait_ready(s.user, "idle-batch")
        ready = time.time()
        for name in ("busy", "watched"):
            s.api.wait_ready(s.user, name)
        assert len(slurm_jobs(site, system, xlogin)) == 1
        # A cell that keeps printing (no browser), and a lab open in the browser.
        s.api.run_cell(s.user, "busy", "import threading, time\n"
                       "def tick():\n    for i in range(60):\n        print('tick', i, flush=True); time.sleep(5)\n"
                       "threading.Thread(target=tick, daemon=True).start()\n", keep_kernel=True)
        s.driver.get(f"{s.url}{HubClient.lab(s.user, 'watched')}lab")
        browser.wait_for("JupyterLab of the watched lab", lambda: s.driver.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel"), 60)
        card = wait_card(s, "idle-batch", ("stopped",), limit + 150)
        after = time.time() - ready
        print(f"the idle lab was stopped {after:.0f} s after it was ready (limit {limit} s)")
        # (ready is when the test saw it ready, up to a poll later than the hub did)
        assert after >= limit - 5, f"the idle lab was stopped after {after:.0f} s, before its limit of {limit} s"
        assert "without activity" in card["reason"], card
        wait_gone(f"the idle lab's Slurm job of {xlogin}", lambda: slurm_jobs(site, system, xlogin), 60)
        # Past the limit plus a cull round, the busy and the watched labs still run.
        time.sleep(max(0, ready + limit + 45 - time.time()))
        for name in ("busy", "watched"):
            model = s.api.server(s.user, name)
            assert model and model["ready"], f"the {name} lab was stopped: {model}"
        open_home(s)
        browser.wait_for("the culled card", lambda: card_field(s.driver, "idle-batch", "state") == "Stopped", 30)
        browser.shot(s.driver, f"{s.user}-16-idle-lab-stopped")
    finally:
        s.driver.get(f"{s.url}/hub/home")
        s.api.remove_all(s.user)


# ---- fault drill: Unity down -------------------------------------------------------------------------
def test_with_unity_down_a_login_gets_a_clear_page_and_running_labs_keep_working(site, sessions, net):
    """Unity stopped for a while: a new login gets the hub's 503 page within seconds (not the
    browser's own error on Unity's host), a running lab answers its cells, and once Unity is back
    logins work again with nothing else restarted."""
    system = first_system(site)
    user = mapped_users(site, system)[0]
    s = sessions(user["name"])
    status, body = s.api.start(s.user, "drill", {"system": system, "target": "login"})
    assert status in (201, 202), (status, body)
    s.api.wait_ready(s.user, "drill")
    hub = cluster_host(site["hub"])
    hub_pid = hub.check_output("systemctl show -P MainPID jupyterhub.service")
    unity = site["services"]["unity"]
    idm = cluster_host(unity["host"])
    idm.run_expect([0], "systemctl stop unity-idm.service")
    try:
        d = browser.make_driver(net["hosts"], net["ca"], str(SHOTS))
        try:
            started = time.time()
            d.get(f"{s.url}/hub/oauth_login")
            text = browser.wait_for("the hub's page about the login service", lambda: next(
                (t for t in [d.find_element(By.TAG_NAME, "body").text] if "does not answer" in t), None), 30)
            elapsed = time.time() - started
            browser.shot(d, "unity-down-01-login-page")
        finally:
            browser.quit(d)
        assert "503" in text and f"Unity at {unity['fqdn']}" in text and "Labs that are running keep running" in text, text
        assert "Traceback" not in text and elapsed < 15, (elapsed, text)
        assert run_cell(s, "drill")[1] == user["systems"][system]["uid"]
    finally:
        idm.run("systemctl start unity-idm.service")
    back = time.time()
    discovery = unity["issuer"] + "/.well-known/openid-configuration"
    probe = (f"python3 -c 'import ssl, urllib.request; urllib.request.urlopen(\"{discovery}\", timeout=5, "
             f"context=ssl.create_default_context(cafile=\"{SITE_CA}\"))'")
    deadline = time.time() + 240
    while hub.run(probe).rc != 0:
        if time.time() > deadline:
            pytest.fail("Unity did not answer within 240 s of its start")
        time.sleep(2)
    print(f"Unity answered again {time.time() - back:.0f} s after its start")
    # A new login works with nothing else restarted (the same hub process), and the lab still runs.
    other = Session(site, net, mapped_users(site, system)[-1]["name"])
    try:
        other.login(shot="unity-down-02-login-again")
        assert other.api.request("GET", f"/hub/api/users/{other.user}")[0] == 200
    finally:
        other.close()
    assert hub.check_output("systemctl show -P MainPID jupyterhub.service") == hub_pid
    assert run_cell(s, "drill")[1] == user["systems"][system]["uid"]
    s.api.stop(s.user, "drill")
