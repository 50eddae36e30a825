"""Shared fixtures for the scenario's behaviour tests.

molecule runs these tests with testinfra's ansible backend over the scenario's inventory
(the linked inventories/molecule files), so test hosts are addressed by inventory name.
"""

import functools
import json
import os
import subprocess

import pytest
import testinfra


@pytest.fixture(scope="session")
def inventory(request):
    """The inventory molecule passed to pytest (a directory)."""
    return request.config.option.ansible_inventory


@pytest.fixture(scope="session")
def node(inventory):
    """node("c1-login") -> a testinfra host for that inventory host."""

    @functools.cache
    def get(name):
        return testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)

    return get


# pyunicore in a venv on the first hub host: UNICORE clients run where JupyterHub runs.
UNICORE_CLIENT_VENV = "/opt/ihpc-tests/pyunicore-venv"
PYUNICORE = "pyunicore>=1.3,<2"


@pytest.fixture(scope="session")
def hub_python(inventory):
    """hub_python(code, env={...}) runs Python with pyunicore on the hub host; returns the JSON
    of its last stdout line. Secrets go in env (docker exec -e), never into the code."""
    import testinfra.utils.ansible_runner  # pylint: disable=import-outside-toplevel

    hub = testinfra.utils.ansible_runner.AnsibleRunner(inventory).get_hosts("hub")[0]
    host = testinfra.get_host(f"ansible://{hub}", ansible_inventory=inventory)
    if host.run(f"{UNICORE_CLIENT_VENV}/bin/python -c 'import pyunicore.client'").rc != 0:
        host.run_expect([0], "python3 -c 'import ensurepip' "
                             "|| DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv")
        host.run_expect([0], f"python3 -m venv {UNICORE_CLIENT_VENV} && {UNICORE_CLIENT_VENV}/bin/pip install -q '{PYUNICORE}'")

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
