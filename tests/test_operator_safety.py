"""Operator safety on a small throwaway site: lost secrets, a dry run on a new site, unreachable hosts.

Two Debian 13 systemd containers (the image scripts/bootstrap builds) on a network of their own
form one HPC system: `sf-login` (login node, Slurm controller, every service group, so it gets a
host certificate) and `sf-node1` (compute node). They use the connection plugin of the test
cluster (inventories/molecule/hosts.yml). In this order:

1. `--check --diff` of validate + pki + hpc_systems on the new site (fresh hosts without package
   lists, no secrets on the controller) succeeds, reports what would change and changes nothing;
2. the real run converges the site;
3. with the secrets directory moved away, the next run stops before changing anything, naming
   both hosts, their site CA and munge key and the way out; the CA and munge key on the hosts
   keep their checksums and the controller gets no new secrets. With only the munge keys gone,
   a --check run stops the same way. With -e site_rekey=true the run replaces CA and keys;
4. a dry run of the converged site (after the re-key) changes nothing;
5. a host whose container does not exist, and a host whose ssh port is closed, are reported as
   UNREACHABLE with their name, without the masked "'dict' has no attribute 'stdout_lines'"
   error.

The containers carry labels and are removed at the end, also when a test fails; leftovers of a
run that was killed are removed by the next run. The module is skipped only when no container
engine answers. It prints how long it took.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import run_playbook

REPO = Path(__file__).resolve().parents[1]
# The site artifact mirror beside the checkout, as inventories/molecule resolves it.
SITE_MIRROR = (REPO / ".." / "shared" / "mirror").resolve()
IMAGE = "ihpc/debian-systemd:trixie"
LABEL = "ihpc.test"
LABEL_VALUE = "operator-safety"
RUN = uuid.uuid4().hex[:6]
NETWORK = "sf-%s" % RUN
# Inventory name -> container name; the inventory name is also the host name and network alias
# (Slurm node names must resolve).
HOSTS = {"sf-login": "sf-%s-login" % RUN, "sf-node1": "sf-%s-node1" % RUN}
GONE = "sf-gone"  # an inventory host without a container
PLAYBOOKS = ["validate.yml", "pki.yml", "hpc_systems.yml"]
CA_PATH = "/etc/ihpc/pki/ca.pem"
MUNGE_KEY = "/etc/munge/munge.key"


def _docker(*args, timeout=120, check=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError("docker %s failed: %s" % (" ".join(args), result.stderr.strip()))
    return result


def _engine_problem():
    """Why no container engine answers, or None when one does."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer within 30 s"
    if result.returncode != 0:
        return "'docker info' failed: %s" % result.stderr.strip().splitlines()[-1:]
    return None


def _remove_leftovers():
    """Containers and networks of earlier runs of this module whose pytest process is gone."""
    listed = _docker("ps", "-a", "--filter", "label=%s=%s" % (LABEL, LABEL_VALUE),
                     "--format", '{{.Names}} {{.Label "ihpc.test.pid"}}', check=False).stdout.split("\n")
    for line in filter(None, listed):
        name, _, pid = line.partition(" ")
        if not pid.isdigit() or not Path("/proc", pid).exists():
            _docker("rm", "-f", name, check=False)
    for line in filter(None, _docker("network", "ls", "--filter", "label=%s=%s" % (LABEL, LABEL_VALUE),
                                     "--format", '{{.Name}} {{.Label "ihpc.test.pid"}}', check=False).stdout.split("\n")):
        name, _, pid = line.partition(" ")
        if not pid.isdigit() or not Path("/proc", pid).exists():
            _docker("network", "rm", name, check=False)


def _labels():
    return ["--label", "%s=%s" % (LABEL, LABEL_VALUE), "--label", "ihpc.test.pid=%d" % os.getpid()]


def _start_containers():
    _docker("network", "create", *_labels(), NETWORK)
    for host, container in HOSTS.items():
        # The options of molecule/default/create.yml (systemd as PID 1 without --privileged).
        _docker("run", "-d", "--name", container, "--hostname", host, "--network", NETWORK,
                "--network-alias", host, *_labels(), "--cap-add", "SYS_ADMIN",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp", IMAGE)
    deadline = time.monotonic() + 120
    for container in HOSTS.values():
        state = ""
        while time.monotonic() < deadline:
            state = _docker("exec", container, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        assert state in ("running", "degraded"), "%s: systemd state %r after 120 s" % (container, state)


def _remove_containers():
    for container in HOSTS.values():
        _docker("rm", "-f", container, check=False)
    _docker("network", "rm", NETWORK, check=False)


def _test_cluster_connection():
    """The connection plugin of the test cluster's inventory, which these hosts use as well."""
    hosts = yaml.safe_load((REPO / "inventories" / "molecule" / "hosts.yml").read_text())
    return hosts["test_containers"]["vars"]["ansible_connection"]


def _write_inventory(directory: Path, extra_compute=None):
    """A one-system site: sf-login is login node, controller and every service host."""
    (directory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    login = {"sf-login": {"ansible_host": HOSTS["sf-login"]}}
    compute = {"sf-node1": {"ansible_host": HOSTS["sf-node1"]}}
    compute.update(extra_compute or {})
    groups = {name: {"hosts": login} for name in ("hub", "unity", "unicore_gateway", "unicore_xuudb",
                                                  "unicore_servers", "x1_login")}
    groups["x1_compute"] = {"hosts": compute}
    hosts = {"all": {"vars": {"ansible_connection": _test_cluster_connection()}, "children": groups}}
    site = {
        "site_secrets_dir": "{{ inventory_dir }}/secrets",
        "site_container_mode": True,
        "site": {"name": "sf-test", "domain": "sf.test", "public_hub_url": "https://sf-login.sf.test"},
        "hpc_systems": {"x1": {
            "display_name": "X1 (operator safety test)", "unicorex_host": "sf-login", "unicorex_port": 7777,
            "login_group": "x1_login", "compute_group": "x1_compute",
            "slurm": {"managed": True, "controller": "sf-login", "node_cpus": 1, "node_real_memory_mb": 500},
            "partitions": [{"name": "batch", "default": True, "max_runtime_minutes": 10}],
            "accounts_managed": True,
        }},
        "hpc_users": [{"name": "alice", "systems": {"x1": {"xlogin": "alice", "uid": 20001}}}],
        # The install sources every site names (validated in the first play), as the test inventory does.
        "unicore_tsi_archive": str(SITE_MIRROR / "tsi" / "unicore-tsi-11.0.1.tgz"),
        "unicore_tsi_archive_checksum": "sha256:61af86d8b11a0a1b7be67647683aea94d51beb5ffee8e0c9e1c0ac33dca0a72c",
    }
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    (directory / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(site, sort_keys=False))
    return directory


def _playbook(inventory: Path, playbooks, *extra):
    """One ansible-playbook run of the playbooks; .recap holds the counters of the whole run."""
    started = time.monotonic()
    result = run_playbook("-i", inventory, *[REPO / "playbooks" / p for p in playbooks], *extra, timeout=1200)
    print("ansible-playbook %s %s: rc=%d in %.0f s" % (" ".join(playbooks), " ".join(extra), result.returncode,
                                                        time.monotonic() - started))
    return result


def _tail(result, lines=120):
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def _host_sha256(host, path):
    result = _docker("exec", HOSTS[host], "sha256sum", path, check=False)
    return result.stdout.split()[0] if result.returncode == 0 else None


def _files(directory: Path):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    problem = _engine_problem()
    if problem:
        pytest.skip("operator safety tests need a container engine: %s" % problem)
    if _docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail("image %s is missing: scripts/bootstrap --prepare-only builds it" % IMAGE)
    started = time.monotonic()
    _remove_leftovers()
    inventory = _write_inventory(tmp_path_factory.mktemp("operator-safety") / "inventory")
    try:
        _start_containers()
        yield {"inventory": inventory, "secrets": inventory / "secrets"}
    finally:
        _remove_containers()
        print("\noperator safety tests: %.0f s in all (containers %s, removed)" % (
            time.monotonic() - started, ", ".join(HOSTS.values())))


@pytest.fixture(scope="module")
def new_site_dry_run(site):
    return _playbook(site["inventory"], PLAYBOOKS, "--check", "--diff")


@pytest.fixture(scope="module")
def converged(site, new_site_dry_run):  # pylint: disable=unused-argument  # the dry run needs bare hosts
    result = _playbook(site["inventory"], PLAYBOOKS)
    assert result.returncode == 0, _tail(result)
    return site


def test_check_diff_on_a_new_site_shows_changes_and_changes_nothing(site, new_site_dry_run):
    result = new_site_dry_run
    output = result.stdout + result.stderr
    assert result.returncode == 0, _tail(result)
    recap = result.recap
    assert set(recap) >= set(HOSTS), recap
    for host in HOSTS:
        assert recap[host]["failed"] == 0 and recap[host]["unreachable"] == 0, recap
        assert recap[host]["changed"] > 0, "a new site must show changes:\n%s" % _tail(result)
    # What would change is shown (diffs) and what cannot be checked yet is said.
    assert "+++ after" in output, _tail(result)
    assert "does not exist yet" in output, _tail(result)
    # Nothing changed: no secrets on the controller, no PKI files or packages on the hosts.
    assert _files(site["secrets"]) == []
    for host in HOSTS:
        assert _host_sha256(host, CA_PATH) is None
        assert _docker("exec", HOSTS[host], "test", "-e", MUNGE_KEY, check=False).returncode != 0


def test_lost_secrets_stop_the_run_before_any_change(converged):
    inventory, secrets = converged["inventory"], converged["secrets"]
    before = {host: (_host_sha256(host, CA_PATH), _host_sha256(host, MUNGE_KEY)) for host in HOSTS}
    assert all(all(pair) for pair in before.values()), before
    # Out of the inventory directory: Ansible would read anything else there as inventory.
    moved = secrets.parent.parent / "secrets.moved-away"
    secrets.rename(moved)
    try:
        result = _playbook(inventory, ["pki.yml", "hpc_systems.yml"])
        output = result.stdout + result.stderr
        assert result.returncode != 0, _tail(result)
        assert "2 host(s) carry site secrets" in output, _tail(result)
        for host in HOSTS:
            assert re.search(r"- %s: %s holds the site CA .* but the controller has no %s"
                             % (host, re.escape(CA_PATH), re.escape(str(secrets / "pki" / "ca" / "ca.crt"))),
                             output), _tail(result)
            assert re.search(r"- %s: %s holds a munge key of x1 .* but the controller has no %s"
                             % (host, re.escape(MUNGE_KEY), re.escape(str(secrets / "munge" / "x1.key"))),
                             output), _tail(result)
        assert "Restore %s" % secrets in output and "-e site_rekey=true" in output, _tail(result)
        assert all(counters["changed"] == 0 for counters in result.recap.values()), _tail(result)
        # Nothing changed: the hosts keep CA and key, the controller made no new secrets.
        assert {host: (_host_sha256(host, CA_PATH), _host_sha256(host, MUNGE_KEY)) for host in HOSTS} == before
        assert _files(secrets) == []
    finally:
        shutil.rmtree(secrets, ignore_errors=True)
        moved.rename(secrets)

    # Only the munge keys lost: a dry run stops as well, naming the munge key and not the CA.
    munge_moved = secrets.parent.parent / "munge.moved-away"
    (secrets / "munge").rename(munge_moved)
    try:
        result = _playbook(inventory, ["pki.yml", "hpc_systems.yml"], "--check", "--diff")
        output = result.stdout + result.stderr
        assert result.returncode != 0, _tail(result)
        for host in HOSTS:
            assert "- %s: %s holds a munge key of x1" % (host, MUNGE_KEY) in output, _tail(result)
        assert "holds the site CA" not in output, _tail(result)
        assert not (secrets / "munge").exists()
    finally:
        shutil.rmtree(secrets / "munge", ignore_errors=True)
        munge_moved.rename(secrets / "munge")


def test_explicit_rekey_replaces_ca_and_munge_keys(converged):
    inventory, secrets = converged["inventory"], converged["secrets"]
    before = {host: (_host_sha256(host, CA_PATH), _host_sha256(host, MUNGE_KEY)) for host in HOSTS}
    shutil.rmtree(secrets)
    result = _playbook(inventory, ["pki.yml", "hpc_systems.yml"], "-e", "site_rekey=true")
    output = result.stdout + result.stderr
    assert result.returncode == 0, _tail(result)
    assert "site_rekey is set, so this run replaces them" in output, _tail(result)
    ca_bundle = (secrets / "pki" / "ca" / "ca.crt").read_text()
    new_key = subprocess.run(["sha256sum", str(secrets / "munge" / "x1.key")], capture_output=True, text=True,
                             check=True).stdout.split()[0]
    for host in HOSTS:
        ca, key = _host_sha256(host, CA_PATH), _host_sha256(host, MUNGE_KEY)
        assert ca != before[host][0] and key != before[host][1], host
        assert key == new_key, host
        host_ca = _docker("exec", HOSTS[host], "cat", CA_PATH).stdout
        assert host_ca.strip() == ca_bundle.strip(), host
    # The system works with the new key: a credential made on the compute node decodes on the controller.
    credential = _docker("exec", HOSTS["sf-node1"], "munge", "--no-input").stdout
    decoded = subprocess.run(["docker", "exec", "-i", HOSTS["sf-login"], "unmunge"], input=credential,
                             capture_output=True, text=True, timeout=60, check=False)
    assert decoded.returncode == 0, decoded.stderr


def test_check_diff_on_the_converged_site_changes_nothing(converged):
    """After the re-key the site is converged: a dry run passes the secrets check and changes nothing."""
    result = _playbook(converged["inventory"], PLAYBOOKS, "--check", "--diff")
    assert result.returncode == 0, _tail(result)
    recap = result.recap
    assert set(recap) >= set(HOSTS), recap
    assert all(counters["changed"] == 0 and counters["failed"] == 0 for counters in recap.values()), _tail(result)


# How the unreachable host is reached: a container that does not exist, with the test cluster's
# connection plugin (the Docker CLI plugin turns that into a module failure unless Ansible's
# first step is a connection step), and ssh to a closed loopback port, as at a site.
UNREACHABLE_VARS = {
    "container": {"ansible_host": "sf-%s-gone" % RUN},
    "ssh": {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9,
            "ansible_ssh_common_args": "-o BatchMode=yes -o ConnectTimeout=2", "ansible_ssh_retries": 0},
}


@pytest.mark.parametrize("how", sorted(UNREACHABLE_VARS))
def test_unreachable_host_is_reported_with_its_name(converged, tmp_path, how):
    inventory = _write_inventory(tmp_path / "inventory", {GONE: UNREACHABLE_VARS[how]})
    shutil.copytree(converged["secrets"], inventory / "secrets")
    result = _playbook(inventory, ["pki.yml"], "--check", "--limit", GONE)
    output = result.stdout + result.stderr
    assert result.returncode == 4, _tail(result)  # 4: a host was unreachable
    assert re.search(r"^fatal: \[%s\]: UNREACHABLE!" % GONE, output, re.M), _tail(result)
    assert "stdout_lines" not in output, _tail(result)
    assert result.recap[GONE]["unreachable"] == 1, _tail(result)
