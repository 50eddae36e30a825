"""Shared fixtures for the scenario's behaviour tests.

molecule runs these tests with testinfra's ansible backend over the scenario's inventory
(the linked inventories/molecule files), so test hosts are addressed by inventory name.
"""

import functools

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
