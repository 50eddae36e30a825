"""The health report (playbooks/status.yml) on the converged site: every service up, exit 0; one
service stopped, a non-zero exit that names it; nothing changed on any host either way."""

import json
import re
import time

import pytest

from conftest import REPO, cluster_host, run_playbook, site_model


def report(inventory):
    run = run_playbook(REPO / "playbooks" / "status.yml", "-i", inventory, timeout=600)
    changed = {host: c["changed"] for host, c in run.recap.items()}
    assert changed and all(n == 0 for n in changed.values()), f"the report changed something: {changed}"
    return run


def test_the_report_shows_every_service_partition_and_unicore_connection_up_and_exits_0(inventory):
    model = site_model()
    run = report(inventory)
    out = run.stdout
    assert run.returncode == 0, out[-6000:]
    assert "RESULT: all up" in out, out[-4000:]
    services = model["services"]
    expected = ["jupyterhub.service", "jupyterhub-proxy.service", "unity-idm.service", "unicore-gateway.service",
                "unicore-xuudb.service"] + [f"unicore-unicorex@{s}.service" for s in sorted(model["systems"])]
    for unit in expected:
        line = next((ln for ln in out.splitlines() if unit in ln), "")
        assert " active " in line and "CLOSED" not in line, f"{unit}: {line or 'not in the report'}"
    for name, system in sorted(model["systems"].items()):
        # UNICORE/X's own view of its back ends: the TSI, the XUUDB and Unity, all OK.
        for connection in ("TSI 1: OK", "XUUDB attribute source: OK", "OIDC Server"):
            assert f"  {name}: {connection}" in out, f"{name}: no '{connection}' in:\n{out[-3000:]}"
        if system["slurm"]["managed"]:
            for part in system["partitions"]:
                assert f"{name}: {part['name']}, up," in out, f"partition {part['name']} of {name} not up:\n{out[-3000:]}"
    # Versions are read on the hosts: the hub's is the one its API reports.
    api = json.loads(cluster_host(services["hub"]["host"]).check_output(
        "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8081/hub/api/\").read().decode())'"))
    hub_line = next(ln for ln in out.splitlines() if "jupyterhub.service" in ln)
    assert f" {api['version']} " in hub_line, (api, hub_line)


def test_a_stopped_service_makes_the_report_fail_and_name_it(inventory):
    model = site_model()
    host = model["services"]["xuudb"]["host"]
    node = cluster_host(host)
    node.run_expect([0], "systemctl stop unicore-xuudb.service")
    try:
        run = report(inventory)
        assert run.returncode != 0, run.stdout[-4000:]
        # The failure message (on stdout or stderr, as the run's output callback puts it).
        found = re.search(r"Down: ([^\n\"']*)", run.stdout + "\n" + run.stderr)
        assert found, run.stdout[-3000:] + run.stderr[-2000:]
        problems = found.group(1).split("; ")
        assert f"{host}: unicore-xuudb.service is inactive" in problems, problems
        # ... and nothing else of the site is reported down with it (UNICORE/X may miss its XUUDB).
        assert all("xuudb" in p.lower() for p in problems), problems
    finally:
        node.run("systemctl start unicore-xuudb.service")
    deadline = time.time() + 120
    while time.time() < deadline:
        if node.run(f"ss -Hltn 'sport = :{model['services']['xuudb']['port']}'").stdout.strip():
            return
        time.sleep(2)
    pytest.fail("XUUDB did not listen again within 120 s of its restart")
