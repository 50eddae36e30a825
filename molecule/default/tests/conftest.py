"""Shared pieces of the scenario's behaviour tests.

molecule runs these tests (`molecule verify`) with testinfra's ansible backend over its copy of
the test inventory, so test hosts are addressed by inventory name. Every module also runs on
its own against a converged test cluster, without molecule: `scripts/verify [pytest args]`, or
from the repository root

    .venv/bin/pytest -p no:cacheprovider molecule/default/tests/test_slurm.py

The inventory is then inventories/molecule and the connection ansible, as molecule would pass
them (--ansible-inventory and --connection still choose others).

Test modules import what they share from here (`from conftest import site_model`). Variables
are read as Ansible renders them for a host (ansible_var, ansible_expr: an ad-hoc `debug`),
because ansible-inventory gives templates unrendered; that is also how the tests read the
derived site model (site_systems, site_users, site_services, site_host_fqdn;
vars_plugins/site_model.yml) instead of deriving its facts again.
"""

import copy
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner

REPO = Path(__file__).resolve().parents[3]
TEST_INVENTORY = REPO / "inventories" / "molecule"
# Where site_pki puts the site CA bundle on every host (site_pki_ca_cert_path; the test
# inventory keeps the role's default).
SITE_CA = "/etc/ihpc/pki/ca.pem"
# pyunicore in a venv on the hub host: UNICORE clients run where JupyterHub runs.
UNICORE_CLIENT_VENV = "/opt/ihpc-tests/pyunicore-venv"
PYUNICORE = "pyunicore>=1.3,<2"


def _load_shared():
    """tests/conftest.py (ansible-playbook, the reader of a run's counters), under a name of its own."""
    spec = importlib.util.spec_from_file_location("ihpc_shared_tests", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SHARED = _load_shared()
ANSIBLE_PLAYBOOK = _SHARED.ANSIBLE_PLAYBOOK
run_playbook = _SHARED.run_playbook

if "MOLECULE_INVENTORY_FILE" not in os.environ:
    # Without molecule (which points ANSIBLE_CONFIG at its own copy): the repository's
    # ansible.cfg, for the roles and plugins the rendered variables need, from any directory.
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
# testinfra starts `ansible` and `ansible-inventory` from PATH: the ones beside this Python.
if os.environ.get("PATH", "").split(os.pathsep)[0] != str(Path(sys.executable).parent):
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

_GIVEN = {"ansible_inventory": None}


def inventory_dir() -> str:
    """The inventory of these tests: molecule's (the directory of MOLECULE_INVENTORY_FILE), else
    pytest's --ansible-inventory, else the test inventory inventories/molecule."""
    molecule = os.environ.get("MOLECULE_INVENTORY_FILE")
    if molecule:
        return os.path.dirname(molecule)
    return _GIVEN["ansible_inventory"] or str(TEST_INVENTORY)


def pytest_configure(config):
    given = config.getoption("ansible_inventory", None)
    # Absolute: the tests also run ansible from other directories.
    _GIVEN["ansible_inventory"] = os.path.abspath(given) if given else None
    # testinfra's `host` fixture uses the same inventory, over the ansible connection.
    config.option.ansible_inventory = inventory_dir()
    if not config.getoption("connection", None):
        config.option.connection = "ansible"


@functools.cache
def ansible_inventory():
    """testinfra's reader of the inventory (one `ansible-inventory --list`)."""
    return testinfra.utils.ansible_runner.AnsibleRunner.get_runner(inventory_dir())


def group_hosts(pattern="all"):
    """Inventory hosts of a group (or matching a pattern), sorted."""
    return ansible_inventory().get_hosts(pattern)


@functools.cache
def cluster_host(name):
    """A testinfra host for an inventory host."""
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory_dir())


@functools.cache
def _rendered(host, expression):
    return cluster_host(host).ansible("ansible.builtin.debug", f"msg={{{{ {expression} }}}}", check=False)["msg"]


def ansible_expr(host, expression):
    """A Jinja expression as Ansible renders it for that host (an undefined name fails)."""
    # A copy: the answers are cached and callers may change what they get.
    return copy.deepcopy(_rendered(host, expression))


def ansible_var(host, name):
    """A variable as Ansible renders it for that host (an undefined one fails)."""
    return ansible_expr(host, name)


@functools.cache
def _model():
    # One ad-hoc run for the whole model; it is the same for every host.
    return _rendered(group_hosts("all")[0], "{'site': site, 'systems': site_systems, 'users': site_users,"
                                            " 'services': site_services, 'fqdns': dict(groups['all'] | zip("
                                            "groups['all'] | map('extract', hostvars, 'site_host_fqdn')))}")


def site_model():
    """The derived site model: {'site': the inventory's site, 'systems': site_systems,
    'users': site_users, 'services': site_services, 'fqdns': {host: site_host_fqdn}}."""
    return copy.deepcopy(_model())


def host_fqdn(name):
    """An inventory host's name in certificates and URLs (site_host_fqdn)."""
    return _model()["fqdns"][name]


def hub_host():
    """The host that runs JupyterHub (site_services.hub.host)."""
    return _model()["services"]["hub"]["host"]


@pytest.fixture(scope="session")
def inventory():
    """The inventory of these tests (a directory)."""
    return inventory_dir()


@pytest.fixture(scope="session")
def node():
    """node("c1-login") -> a testinfra host for that inventory host."""
    return cluster_host


def install_pyunicore(host):
    """pyunicore in UNICORE_CLIENT_VENV on a testinfra host, unless it is there already."""
    if host.run(f"{UNICORE_CLIENT_VENV}/bin/python -c 'import pyunicore.client'").rc != 0:
        host.run_expect([0], "command -v python3 && (python3 -c 'import ensurepip' "
                             "|| DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv)")
        host.run_expect([0], f"python3 -m venv {UNICORE_CLIENT_VENV} && "
                             f"{UNICORE_CLIENT_VENV}/bin/pip install -q '{PYUNICORE}'")


@pytest.fixture(scope="session")
def hub_python():
    """hub_python(code, env={...}) runs Python with pyunicore on the hub host; returns the JSON
    of its last stdout line. Secrets go in env (docker exec -e), never into the code."""
    hub = hub_host()
    install_pyunicore(cluster_host(hub))

    def run(code, env=None, timeout=600):
        cmd = ["docker", "exec", "-i"]
        for key in env or {}:
            cmd += ["-e", key]
        cmd += [hub, "timeout", str(timeout), f"{UNICORE_CLIENT_VENV}/bin/python", "-"]
        proc = subprocess.run(cmd, input=code, capture_output=True, text=True, timeout=timeout + 30,
                              env=dict(os.environ, **(env or {})), check=False)
        assert proc.returncode == 0, f"client failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run
