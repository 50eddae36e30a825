"""Install sources named in the inventory (docs/artifacts.md, "A site artifact mirror").

A missing site mirror or TSI archive stops site.yml in its first play, with a message that
names the variable and the path, before any host is touched. The resolver itself refuses a
missing file:// repository too, for runs of playbooks/artifacts.yml and the server roles.
"""

from __future__ import annotations

import importlib.util

import pytest

from test_inventory_validation import REPO, SITE_MIRROR, _run, _write_inventory


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return _write_inventory(tmp_path_factory.mktemp("sources") / "molecule")


def _fails_first(result, *texts):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "The install sources named in the inventory are not usable" in output, output
    for text in texts:
        assert text in output, f"{text!r} missing in:\n{output}"
    hosts = result.recap
    assert set(hosts) == {"localhost"}, hosts
    assert all(c["changed"] == 0 and c["unreachable"] == 0 for c in hosts.values()), hosts


def test_the_test_inventory_uses_the_site_mirror(inventory):
    assert SITE_MIRROR.is_dir(), f"the site artifact mirror {SITE_MIRROR} is missing beside the checkout"
    result = _run("validate.yml", inventory)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_maven_mirror_stops_site_yml_naming_the_path(inventory):
    result = _run("site.yml", inventory, ["-e", '{"artifact_supply_maven_repositories": ["file:///srv/no-such-mirror/maven"]}'])
    _fails_first(result, "artifact_supply_maven_repositories: file:///srv/no-such-mirror/maven does not exist",
                 "no directory /srv/no-such-mirror/maven")


def test_missing_tsi_archive_stops_site_yml_naming_the_path(inventory):
    result = _run("site.yml", inventory, ["-e", "unicore_tsi_archive=/srv/no-such-mirror/unicore-tsi-11.0.1.tgz"])
    _fails_first(result, "unicore_tsi_archive: /srv/no-such-mirror/unicore-tsi-11.0.1.tgz does not exist on the controller")


def test_tsi_url_needs_a_checksum(inventory):
    result = _run("site.yml", inventory, ["-e", "unicore_tsi_archive=https://tsi.invalid/unicore-tsi-11.0.1.tgz",
                                          "-e", "unicore_tsi_archive_checksum="])
    _fails_first(result, "unicore_tsi_archive_checksum: required for the TSI archive https://tsi.invalid/unicore-tsi-11.0.1.tgz")


def test_resolver_refuses_a_missing_file_repository():
    spec = importlib.util.spec_from_file_location("maven_closure", REPO / "roles" / "artifact_supply" / "library" / "maven_closure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(module.ClosureError, match="does not exist .no directory /srv/no-such-mirror/maven."):
        module.check_repositories(["file:///srv/no-such-mirror/maven"])
    assert module.check_repositories([f"file://{SITE_MIRROR}/maven/"]) == [f"file://{SITE_MIRROR}/maven"]
    pom = module.generate_pom("x", [module.parse_coordinate("a:b:1")], [],
                              [module.parse_coordinate("io.imunity:unity-server-parent:4.2.0:pom")],
                              "/l", "/e", "/f", [f"file://{SITE_MIRROR}/maven"])
    assert "<scope>import</scope>" in pom and "<id>extra-repository-1</id>" in pom
    assert module.guard_mirror_of(1) == "*,!central,!extra-repository-1"
