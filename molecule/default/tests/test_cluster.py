"""The test cluster itself: every host boots systemd, and each HPC system shares one /home."""

import uuid

from conftest import site_model


def test_systemd_is_running(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), host.run("systemctl --failed --no-legend").stdout


def test_debian_13(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.startswith("13")


def test_home_is_shared_within_a_system_and_not_across(node):
    systems = site_model()["systems"]
    for name, system in sorted(systems.items()):
        # Written on a compute node, as a job would (the hosts of a system are site_systems' hosts).
        maker = system["compute_hosts"][0]
        others = [h for other, s in systems.items() if other != name for h in s["hosts"]]
        marker = f"/home/.shared-{uuid.uuid4().hex}"
        node(maker).run_expect([0], f"echo {name} > {marker}")
        try:
            for host in system["hosts"]:
                assert node(host).file(marker).content_string.strip() == name, host
            for host in others:
                assert not node(host).file(marker).exists, host
        finally:
            node(maker).run(f"rm -f {marker}")
