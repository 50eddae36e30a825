"""Behaviour of the HPC systems c1 and c2 (playbooks/hpc_systems.yml): Slurm jobs, munge, accounts.

Hosts, users and uids come from the derived site model of the inventory (site_systems,
site_users; see conftest.py), so the tests follow the data model: c1 is the system with a
controller on its login node and two compute nodes, c2 the one-node system. Run on its own with
  scripts/verify molecule/default/tests/test_slurm.py
"""

import re
import uuid

import pytest
from conftest import site_model

# The two systems of the test site (inventories/molecule/group_vars/all/site.yml).
MULTI_NODE = "c1"
SINGLE_NODE = "c2"
# Every Slurm command is bounded: a hanging job fails the test instead of the whole run.
JOB_TIMEOUT = 180


@pytest.fixture(scope="module")
def model():
    """site_systems and site_users."""
    derived = site_model()
    return {"systems": derived["systems"], "users": derived["users"]}


def hosts_of(model, system, key):
    """The hosts of a system: key "login_hosts" or "compute_hosts"."""
    return sorted(model["systems"][system][key])


def login_of(model, system):
    return hosts_of(model, system, "login_hosts")[0]


def account(model, user, system):
    """(xlogin, uid) of hpc_users entry `user` on `system`, or None when it is not mapped."""
    for entry in model["users"]:
        if entry["name"] == user and system in entry.get("systems", {}):
            mapping = entry["systems"][system]
            return mapping["xlogin"], mapping.get("uid")
    return None


def as_user(host, xlogin, command, timeout=JOB_TIMEOUT):
    """Run `command` through a login shell of `xlogin` (as a user would), bounded in time."""
    return host.run("timeout %s su - %s -c %s", str(timeout), xlogin, command)


def sinfo_nodes(host):
    """{node: compact state} as sinfo sees it from `host`."""
    out = host.run("sinfo --noheader --Node --format=%s", "%N %t")
    assert out.rc == 0, out.stderr
    return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def cluster_name(host):
    out = host.run("scontrol show config")
    assert out.rc == 0, out.stderr
    match = re.search(r"^ClusterName\s*=\s*(\S+)", out.stdout, re.MULTILINE)
    assert match, out.stdout
    return match.group(1)


def test_srun_runs_on_both_compute_nodes(model, node):
    xlogin, _ = account(model, "alice", MULTI_NODE)
    nodes = hosts_of(model, MULTI_NODE, "compute_hosts")
    # -w names the nodes: a node added later (the scale-out side effect) must not be picked.
    out = as_user(node(login_of(model, MULTI_NODE)), xlogin, "srun -N%d -w %s hostname" % (len(nodes), ",".join(nodes)))
    assert out.rc == 0, out.stderr
    assert sorted(out.stdout.split()) == nodes


def test_sbatch_job_writes_into_the_shared_home(model, node):
    xlogin, uid = account(model, "alice", MULTI_NODE)
    login = node(login_of(model, MULTI_NODE))
    path = "/home/%s/sbatch-test-%s.txt" % (xlogin, uuid.uuid4().hex[:8])
    out = as_user(login, xlogin, "sbatch --wait --quiet -N1 -t 2 -o /dev/null --wrap 'hostname > %s'" % path)
    try:
        assert out.rc == 0, out.stdout + out.stderr
        written = login.file(path)
        assert written.exists, "the job's file is not visible on the login node"
        assert written.user == xlogin
        assert written.uid == uid == 20001
        assert written.content_string.strip() in hosts_of(model, MULTI_NODE, "compute_hosts")
    finally:
        login.run("rm -f %s", path)


def test_munge_credential_decodes_within_a_system(model, node):
    maker = hosts_of(model, MULTI_NODE, "compute_hosts")[0]
    credential = node(maker).check_output("munge --no-input")
    out = node(login_of(model, MULTI_NODE)).run("printf '%%s' %s | unmunge", credential)
    assert out.rc == 0, out.stderr
    assert "Success" in out.stdout


def test_munge_credential_is_refused_by_another_system(model, node):
    maker = hosts_of(model, MULTI_NODE, "compute_hosts")[0]
    credential = node(maker).check_output("munge --no-input")
    out = node(login_of(model, SINGLE_NODE)).run("printf '%%s' %s | unmunge", credential)
    assert out.rc != 0, "a credential of %s decodes on %s: the systems share a munge key" % (MULTI_NODE, SINGLE_NODE)


def test_job_on_the_single_node_system_runs_on_its_login_node(model, node):
    xlogin, _ = account(model, "alice", SINGLE_NODE)
    login_name = login_of(model, SINGLE_NODE)
    assert hosts_of(model, SINGLE_NODE, "compute_hosts") == [login_name]
    out = as_user(node(login_name), xlogin, "srun -N1 hostname")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == login_name


def test_systems_are_independent_clusters(model, node):
    first = node(login_of(model, MULTI_NODE))
    second = node(login_of(model, SINGLE_NODE))
    assert cluster_name(first) == MULTI_NODE
    assert cluster_name(second) == SINGLE_NODE
    seen_from_second = set(sinfo_nodes(second))
    assert seen_from_second == set(hosts_of(model, SINGLE_NODE, "compute_hosts"))
    assert not seen_from_second & set(hosts_of(model, MULTI_NODE, "compute_hosts"))


def test_bob_exists_on_c1_only(model, node):
    assert account(model, "bob", SINGLE_NODE) is None
    for name in hosts_of(model, MULTI_NODE, "login_hosts") + hosts_of(model, MULTI_NODE, "compute_hosts"):
        entry = node(name).run("getent passwd bob")
        assert entry.rc == 0, "bob is missing on %s" % name
        assert entry.stdout.split(":")[2] == "20002"
    for name in hosts_of(model, SINGLE_NODE, "login_hosts") + hosts_of(model, SINGLE_NODE, "compute_hosts"):
        assert node(name).run("getent passwd bob").rc == 2, "bob exists on %s" % name


@pytest.mark.parametrize("system", [MULTI_NODE, SINGLE_NODE])
def test_mapped_accounts_have_the_same_uid_on_every_node(model, node, system):
    names = sorted(set(hosts_of(model, system, "login_hosts") + hosts_of(model, system, "compute_hosts")))
    mapped = [account(model, entry["name"], system) for entry in model["users"]]
    for xlogin, uid in [m for m in mapped if m is not None]:
        for name in names:
            user = node(name).user(xlogin)
            assert user.exists, "%s missing on %s" % (xlogin, name)
            assert user.uid == uid
            assert user.home == "/home/%s" % xlogin
        home = node(names[0]).file("/home/%s" % xlogin)
        assert home.is_directory and home.uid == uid
