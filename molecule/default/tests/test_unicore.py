"""UNICORE behaviour, seen by a client: identities, user mapping, jobs, restarts.

The client (pyunicore in a venv) runs INSIDE the hub container and talks to the Gateway over
the test network, as JupyterHub will. Passwords of the test identities (enabled only in the
test inventory, unicore_unicorex_password_users_enabled) come from the controller's secrets
directory. Every HPC system of the test inventory runs the real TSI on its login nodes
(installed from the site artifact mirror); nothing here is skipped in CI.
"""

import json
import os
import pathlib
import textwrap
import time
import uuid

import pytest
from conftest import (SITE_CA, UNICORE_CLIENT_VENV, ansible_expr, ansible_var, cluster_host, group_hosts, hub_host,
                      install_pyunicore, site_model)

# The tests drive everything from the hub; they run once.
testinfra_hosts = [hub_host()]

NO_TSI = "the inventory gives this system UNICORE/X's embedded TSI (hpc_systems.<name>.unicore_tsi_mode)"


@pytest.fixture(scope="module", autouse=True)
def unicore_deployed():
    """site.yml deploys UNICORE: a missing Gateway is a failure, never a skip."""
    gateway = site_model()["services"]["gateway"]["host"]
    assert cluster_host(gateway).run("systemctl is-active unicore-gateway.service").rc == 0, \
        f"the UNICORE Gateway does not run on {gateway}: site.yml should have deployed it"


@pytest.fixture(scope="module")
def site():
    """site_systems, site_users, site_services and the test identities' passwords."""
    model = site_model()
    unicore = group_hosts("unicore_servers")[0]
    secrets = pathlib.Path(ansible_var(unicore, "site_secrets_dir")) / "unicore" / "test-passwords"
    return {
        "systems": model["systems"],
        "users": model["users"],
        "services": model["services"],
        "secrets": secrets,
        "unicore_host": unicore,
    }


@pytest.fixture(scope="module")
def client(host):
    """Runs a Python snippet with pyunicore on the hub; returns its last stdout line as JSON."""
    install_pyunicore(host)

    def run(*parts, timeout=600):
        script = "\n".join(textwrap.dedent(p) for p in parts)
        cmd = f"timeout {timeout} {UNICORE_CLIENT_VENV}/bin/python - <<'PYEOF'\n{script}\nPYEOF"
        res = host.run(cmd)
        assert res.rc == 0, f"client failed (rc={res.rc}):\n{res.stdout}\n{res.stderr}"
        return json.loads(res.stdout.strip().splitlines()[-1])

    return run


def _password(site, name):
    path = site["secrets"] / name
    if not path.exists():
        pytest.fail(f"{path} missing: is unicore_unicorex_password_users_enabled on in the test inventory?")
    return path.read_text().strip()


def _preamble(site, system, user, password):
    return f"""
        import json, time
        import pyunicore.client as uc
        import pyunicore.credentials as cr
        BASE = "{site['services']['unicorex'][system]['rest_url']}"
        tr = uc.Transport(cr.UsernamePassword({user!r}, {password!r}), verify={SITE_CA!r}, timeout=60)
    """


def _tsi_mode(site, system):
    host = cluster_host(site["services"]["unicorex"][system]["host"])
    conf = host.file(f"/opt/unicore/unicorex-{system}/conf/tsi.config").content_string
    return "embedded" if "tsiMode=embedded" in conf else "remote"


def _mapped(site, system):
    """(user name, xlogin) pairs mapped on that system by the inventory."""
    return [(u["name"], u["systems"][system]["xlogin"])
            for u in site["users"] if system in u.get("systems", {})]


def _run_job(client, site, system, user, job, wait=300):
    """Submits a job, waits for a final state, returns status, exit code and stdout.

    UNICORE writes Executable (and Arguments) into the job script as they are, so a job's
    command line is given as one shell string in Executable.
    """
    code = f"""
        c = uc.Client(tr, BASE)
        job = c.new_job({job!r})
        deadline = time.time() + {wait}
        while job.is_running() and time.time() < deadline:
            time.sleep(2)
        props = job.properties
        try:
            out = job.working_dir.stat("stdout").raw().read().decode()
        except Exception as e:
            out = "<no stdout: %s>" % e
        print(json.dumps({{"status": props["status"], "exitCode": props.get("exitCode"),
                          "log": props.get("log", [])[-5:], "stdout": out, "url": job.resource_url}}))
    """
    return client(_preamble(site, system, user, _password(site, user)), code, timeout=wait + 120)


# ---- identities and mapping -------------------------------------------------------------------
def test_mapped_users_see_their_xlogin_and_role(client, site):
    for system in sorted(site["systems"]):
        for user, xlogin in _mapped(site, system):
            info = client(_preamble(site, system, user, _password(site, user)), """
                c = uc.Client(tr, BASE)
                props = c.properties
                print(json.dumps({"client": props["client"], "site": props["server"].get("siteName"),
                                  "connections": props["server"].get("externalConnections", {})}))
            """)
            assert info["client"]["role"]["selected"] == "user", (system, user, info)
            assert info["client"]["xlogin"]["UID"] == xlogin, (system, user, info)
            assert info["client"]["dn"] == f"UID={user}"
            assert info["site"] == system
            # The back ends this deployment owns: the TSI (or the embedded one) and the XUUDB.
            owned = {k: v for k, v in info["connections"].items() if k.startswith("TSI") or "XUUDB" in k}
            assert len(owned) == 2, info["connections"]
            assert all(str(v).startswith("OK") for v in owned.values()), info["connections"]


def test_unmapped_identity_is_refused(client, site):
    # The test identity "unmapped-tester" exists (it can log in) but has no XUUDB entry anywhere.
    system = sorted(site["systems"])[0]
    res = client(_preamble(site, system, "unmapped-tester", _password(site, "unmapped-tester")), """
        import requests
        core = requests.get(BASE, headers={"Authorization": tr.credential.get_auth_header(), "Accept": "application/json"},
                            verify=tr.verify, timeout=60).json()
        post = requests.post(BASE + "/jobs", json={"Executable": "id"}, verify=tr.verify, timeout=60,
                             headers={"Authorization": tr.credential.get_auth_header(),
                                      "Content-Type": "application/json", "Accept": "application/json"})
        try:
            uc.Client(tr, BASE)
            refused = None
        except Exception as e:
            refused = "%s: %s" % (type(e).__name__, e)
        print(json.dumps({"client": core["client"], "post": post.status_code, "reason": post.reason,
                          "pyunicore": refused}))
    """)
    assert res["client"]["role"]["selected"] == "anonymous", res
    assert not res["client"].get("xlogin", {}).get("UID"), res
    # Job submission is forbidden; the client block says why (known identity, no role, no login).
    assert res["post"] == 403 and res["reason"] == "Forbidden", res
    assert res["client"]["dn"] == "UID=unmapped-tester", res
    assert res["pyunicore"] and "AuthenticationFailed" in res["pyunicore"], res


# ---- jobs -------------------------------------------------------------------------------------
def _first_mapped(site, system):
    return _mapped(site, system)[0]


def test_login_node_job_runs(client, site):
    system = "c1" if "c1" in site["systems"] else sorted(site["systems"])[0]
    user, _ = _first_mapped(site, system)
    res = _run_job(client, site, system, user, {
        "Executable": "echo $(id -un) $(hostname -s)",
        "Job type": "ON_LOGIN_NODE", "haveClientStageIn": "false"})
    assert res["status"] == "SUCCESSFUL", res
    assert res["stdout"].strip(), res


def test_login_node_job_runs_as_mapped_user_on_login_node(client, site):
    system = "c1" if "c1" in site["systems"] else sorted(site["systems"])[0]
    if _tsi_mode(site, system) == "embedded":
        pytest.skip(f"{NO_TSI}; skipped: user switching and login-node placement on {system}")
    user, xlogin = _first_mapped(site, system)
    logins = [h.split(".")[0] for h in site["systems"][system]["login_hosts"]]
    res = _run_job(client, site, system, user, {
        "Executable": "echo $(id -un) $(hostname -s)",
        "Job type": "ON_LOGIN_NODE", "haveClientStageIn": "false"})
    assert res["status"] == "SUCCESSFUL", res
    who, where = res["stdout"].split()
    assert who == xlogin
    assert where in logins


def test_batch_job_runs_through_slurm_on_two_nodes(client, site):
    system = "c1"
    if system not in site["systems"]:
        pytest.skip("the test inventory has no system c1")
    if _tsi_mode(site, system) == "embedded":
        pytest.skip(f"{NO_TSI}; skipped: batch submission through Slurm on {system}")
    user, xlogin = _first_mapped(site, system)
    nodes = sorted(h.split(".")[0] for h in site["systems"][system]["compute_hosts"])
    res = _run_job(client, site, system, user, {
        "Executable": "echo USER=$(id -un) JOB=$SLURM_JOB_ID; srun -N 2 -n 2 hostname -s | sort",
        "Resources": {"Queue": "batch", "Nodes": "2", "Runtime": "300"}}, wait=600)
    assert res["status"] == "SUCCESSFUL", res
    lines = res["stdout"].split()
    assert f"USER={xlogin}" in lines, res
    assert any(x.startswith("JOB=") and x != "JOB=" for x in lines), res
    assert sorted(set(lines) & set(nodes)) == nodes[:2], res


def test_a_partition_without_limits_takes_a_two_node_two_hour_request(client, site):
    # docs/inventory.md: a partition without max_nodes / max_runtime_minutes has no limit. Slurm
    # applies none and the spawn form shows none, so UNICORE must not refuse what they accept.
    system = "c1"
    unlimited = [p["name"] for p in site["systems"][system]["partitions"]
                 if p["max_nodes"] is None and p["max_runtime_minutes"] is None]
    assert unlimited, f"the test inventory gives {system} no partition without limits"
    user, xlogin = _first_mapped(site, system)
    nodes = sorted(h.split(".")[0] for h in site["systems"][system]["compute_hosts"])
    res = _run_job(client, site, system, user, {
        "Executable": "echo USER=$(id -un) LIMIT=$(squeue -h -j $SLURM_JOB_ID -o %l); srun -N 2 -n 2 hostname -s | sort",
        "Resources": {"Queue": unlimited[0], "Nodes": "2", "Runtime": str(2 * 3600)}}, wait=600)
    assert res["status"] == "SUCCESSFUL", res
    lines = res["stdout"].split()
    assert f"USER={xlogin}" in lines and "LIMIT=2:00:00" in lines, res
    assert sorted(set(lines) & set(nodes)) == nodes[:2], res


def _wait_unicorex(site, system, timeout=180):
    unicorex = site["services"]["unicorex"][system]
    unicore, port = cluster_host(unicorex["host"]), unicorex["port"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = unicore.run(f"cat /opt/unicore/unicorex-{system}/logs/startup.log").stdout
        if "Server started" in log and unicore.socket(f"tcp://0.0.0.0:{port}").is_listening:
            return
        time.sleep(2)
    pytest.fail(f"unicore-unicorex@{system} did not come back within {timeout} s")


def test_login_node_job_survives_restarts_of_tsi_and_unicorex(client, site):
    """Applying a configuration change restarts services; users' running work must not end."""
    system = "c1" if "c1" in site["systems"] else sorted(site["systems"])[0]
    if _tsi_mode(site, system) == "embedded":
        pytest.skip(f"{NO_TSI}; with the embedded TSI jobs belong to the UNICORE/X service")
    user, xlogin = _first_mapped(site, system)
    marker = uuid.uuid4().hex
    pre = _preamble(site, system, user, _password(site, user))
    submitted = client(pre, f"""
        c = uc.Client(tr, BASE)
        job = c.new_job({{"Executable": "sleep 50; echo {marker}",
                          "Job type": "ON_LOGIN_NODE", "haveClientStageIn": "false"}})
        deadline = time.time() + 60
        while job.properties["status"] != "RUNNING" and time.time() < deadline:
            time.sleep(1)
        print(json.dumps({{"url": job.resource_url, "status": job.properties["status"]}}))
    """)
    assert submitted["status"] == "RUNNING", submitted

    # The TSI on the login node that runs the job (the one with alice's sleep).
    logins = site["systems"][system]["login_hosts"]
    where = [h for h in logins if cluster_host(h).run(f"pgrep -u {xlogin} -f '^sleep 50$'").rc == 0]
    assert len(where) == 1, f"the job's process is not on exactly one login node: {where}"
    login = cluster_host(where[0])
    job_pid = login.check_output(f"pgrep -u {xlogin} -f '^sleep 50$'").split()[0]
    tsi_pid = login.check_output("systemctl show -P MainPID unicore-tsi.service")

    login.run_expect([0], "systemctl restart unicore-tsi.service")
    assert login.check_output("systemctl show -P MainPID unicore-tsi.service") != tsi_pid, "the TSI did not restart"
    assert login.run(f"kill -0 {job_pid}").rc == 0, "restarting the TSI ended the user's job"
    # The old TSI's workers are gone; only the new TSI's own processes remain.
    workers = login.check_output("pgrep -f '^/usr/bin/python3 /opt/unicore/tsi/lib/TSI.py ' | sort -u").split()
    new_pid = login.check_output("systemctl show -P MainPID unicore-tsi.service")
    stale = [w for w in workers if w != new_pid and
             login.check_output(f"ps -o ppid= -p {w} || true").strip() != new_pid]
    assert not stale, f"TSI processes of the stopped TSI survived: {stale}"

    started = time.time()
    cluster_host(site["services"]["unicorex"][system]["host"]).run_expect(
        [0], f"systemctl restart unicore-unicorex@{system}.service")
    _wait_unicorex(site, system)
    print(f"UNICORE/X {system} restart took {time.time() - started:.1f} s")
    assert login.run(f"kill -0 {job_pid}").rc == 0, "restarting UNICORE/X ended the user's job"

    after = client(pre, f"""
        c = uc.Client(tr, BASE)
        listed = [j.resource_url for j in c.get_jobs(num=1000)]
        job = uc.Job(tr, {submitted['url']!r})
        deadline = time.time() + 300
        while job.is_running() and time.time() < deadline:
            time.sleep(2)
        out = job.working_dir.stat("stdout").raw().read().decode()
        print(json.dumps({{"listed": {submitted['url']!r} in listed, "status": job.properties["status"],
                          "stdout": out}}))
    """)
    assert after["listed"], after
    assert after["status"] == "SUCCESSFUL", after
    assert marker in after["stdout"], after


# ---- how it was installed --------------------------------------------------------------------
def test_every_login_node_runs_the_real_tsi(site):
    """CI proves the real TSI: the test inventory chooses it for every system."""
    tsi_version = ansible_expr(site["unicore_host"], "unicore_tsi_version | default('11.0.1')")
    for system, sys in sorted(site["systems"].items()):
        assert sys["unicore_tsi_mode"] == "remote", \
            f"the test inventory must not give {system} the embedded TSI: CI would not test the real one"
        assert _tsi_mode(site, system) == "remote"
        for login in sys["login_hosts"]:
            host = cluster_host(login)
            assert host.service("unicore-tsi.service").is_running, login
            main = host.check_output("systemctl show -P MainPID unicore-tsi.service")
            assert host.check_output(f"ps -o user= -p {main}").strip() == "root", login
            assert f'MY_VERSION = "{tsi_version}"' in host.file("/opt/unicore/tsi/lib/TSI.py").content_string
            # The Slurm variant's batch commands are in place.
            assert "sbatch" in host.file("/opt/unicore/tsi/lib/BSS.py").content_string


def _mirror_sha256(mirror, relpath):
    """The sha256 that the site mirror's README gives for one of its files."""
    for line in (pathlib.Path(mirror) / "README.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.split("|")]
        if len(cells) > 3 and cells[1] == relpath:
            return cells[-2]
    pytest.fail(f"{relpath} is not listed in {mirror}/README.md")


def test_gateway_comes_from_the_site_mirror(site):
    mirror = ansible_var(site["unicore_host"], "test_site_mirror")
    gateway = cluster_host(site["services"]["gateway"]["host"])
    # The version the role installed (/opt/unicore/dist/gateway-<version>/lib/gateway-<version>.jar).
    dists = gateway.check_output("ls -d /opt/unicore/dist/gateway-*").split()
    assert len(dists) == 1, f"expected one installed Gateway, found {dists}"
    version = dists[0].rsplit("gateway-", 1)[1]
    jar = f"gateway-{version}.jar"
    expected = _mirror_sha256(mirror, f"maven/eu/unicore/gateway/{version}/{jar}")
    cache = pathlib.Path(os.environ.get("IHPC_ARTIFACT_CACHE")
                         or pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
                         / "ihpc" / "artifacts")
    cached = cache / f"gateway-{version}" / "lib" / jar
    assert cached.is_file(), f"{cached} missing: the Gateway was not resolved into the artifact cache"
    import hashlib
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == expected, f"{cached} is not the mirror's build"
    installed = gateway.check_output(f"sha256sum {dists[0]}/lib/{jar}").split()[0]
    assert installed == expected, "the Gateway host runs another jar than the mirror's"
