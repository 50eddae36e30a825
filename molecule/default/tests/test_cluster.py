"""The test cluster itself: every host boots systemd, and each HPC system shares one /home."""

import uuid



def test_systemd_is_running(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), host.run("systemctl --failed --no-legend").stdout


def test_debian_13(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.startswith("13")


def test_home_is_shared_within_a_system_and_not_across(node):
    marker = f"/home/.shared-{uuid.uuid4().hex}"
    node("c1-node1").run_expect([0], f"echo c1 > {marker}")
    try:
        for name in ("c1-login", "c1-node2"):
            assert node(name).file(marker).content_string.strip() == "c1"
        assert not node("c2-login").file(marker).exists
    finally:
        node("c1-node1").run(f"rm -f {marker}")
