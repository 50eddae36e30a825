"""Tests of the controller-side artifact cache (roles/artifact_supply and its maven_closure module).

The standard set (UNICORE/X, Gateway, XUUDB, Unity) and a small self-test set are resolved into
the real user cache, so a warm cache makes these tests fast. Tests that damage or empty a cache
work on a copy or a temporary directory, never on the real cache. The runs use the test
inventory (ansible.cfg), which adds the site artifact mirror beside the checkout to the default
repository: what neither serves is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import run_playbook

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "playbooks" / "artifacts.yml"
RESOLVE_TASK = "Resolve each component's runtime closure into the artifact cache"
STANDARD = {
    "unicorex": "3.0.0",
    "gateway": "2.4.0",
    "xuudb": "2.13.3",
    "unity": None,  # version comes from the role defaults
}
# Served by every controller that reaches the default repository; tiny, with one transitive
# dependency, so the machinery is tested even where the standard set is unavailable.
SELFTEST = [
    {"name": "selftest-jar", "coordinates": ["junit:junit:4.13.2"]},
    {
        "name": "selftest-pom",
        "coordinates": ["junit:junit:4.13.2:pom"],
        "extras": ["junit:junit::jar:sources"],
    },
]


def real_cache() -> Path:
    env = os.environ.get("IHPC_ARTIFACT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "ihpc" / "artifacts"


def run_artifacts(cache: Path, *args: str, extra: dict | None = None, path_prefix: Path | None = None,
                  timeout: int = 3600, playbook: Path = PLAYBOOK) -> tuple[int, dict, dict, str]:
    """Runs the playbook on the cache; returns its rc, its JSON report, its counters (recap) and stderr."""
    env = {
        # The JSON report gives each component's result. With profile_tasks (ansible.cfg) off it is
        # all that stdout holds; the list names the stats callback, which runs anyway, because
        # ansible-core 2.19 refuses an empty list.
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_CALLBACKS_ENABLED": "stats_file",
        "IHPC_ARTIFACT_CACHE": str(cache),
    }
    if path_prefix is not None:
        env["PATH"] = "%s:%s" % (path_prefix, os.environ.get("PATH", ""))
    command = [playbook, "-e", json.dumps({"artifact_supply_cache_dir": str(cache)})]
    if extra:
        command += ["-e", json.dumps(extra)]
    command += list(args)
    proc = run_playbook(*command, env=env, cwd=ROOT, timeout=timeout)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail("ansible-playbook printed no JSON (rc %s):\n%s\n%s" % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc.returncode, report, proc.recap, proc.stderr


def item_results(report: dict) -> dict[str, dict]:
    for play in report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].endswith(RESOLVE_TASK):
                results = task["hosts"]["localhost"].get("results", [])
                return {r["item"]["name"]: r for r in results}
    raise AssertionError("the resolve task did not run: %s" % json.dumps(report["stats"]))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assert_manifest_matches(component_dir: Path) -> dict[str, str]:
    """Every file under lib/ and extras/ is listed in SHA256SUMS with its real SHA-256, and vice versa."""
    listed = {}
    for line in (component_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = sorted(
        str(p.relative_to(component_dir)) for sub in ("lib", "extras") for p in (component_dir / sub).rglob("*") if p.is_file()
    )
    assert sorted(listed) == present
    for name, digest in listed.items():
        assert sha256(component_dir / name) == digest, name
    return listed


def stub_maven(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH directory whose 'mvn' fails loudly and leaves a marker: proof that Maven was not run."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    marker = tmp_path / "mvn-was-called"
    script = bin_dir / "mvn"
    script.write_text("#!/bin/sh\necho \"stub mvn called: $*\" >&2\necho called >> '%s'\nexit 97\n" % marker)
    script.chmod(0o755)
    return bin_dir, marker


def load_module():
    spec = importlib.util.spec_from_file_location("maven_closure", ROOT / "roles" / "artifact_supply" / "library" / "maven_closure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the standard set --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standard_set():
    cache = real_cache()
    rc, report, _, stderr = run_artifacts(cache)
    results = item_results(report)
    if rc != 0:
        failed = {name: r for name, r in results.items() if r.get("failed")}
        details = "\n".join("%s: %s" % (n, r.get("msg")) for n, r in sorted(failed.items()))
        pytest.fail("artifacts.yml failed:\n%s" % (details or stderr[-3000:]))
    return cache, results


def test_standard_set_resolves_and_verifies(standard_set):
    cache, results = standard_set
    assert set(results) == set(STANDARD)
    for name, version in STANDARD.items():
        result = results[name]
        component_dir = Path(result["component_dir"])
        assert component_dir.parent == cache
        if version:
            assert result["version"] == version
        listed = assert_manifest_matches(component_dir)
        jars = [n for n in listed if n.startswith("lib/")]
        assert jars and all(n.endswith(".jar") for n in jars), name
        assert result["jars"] == len(jars)
    lib = {name: os.listdir(results[name]["lib_dir"]) for name in STANDARD}
    assert any(j.startswith("uas-core-") for j in lib["unicorex"])
    assert any(j.startswith("use-") for j in lib["unicorex"])
    assert "gateway-2.4.0.jar" in lib["gateway"]
    assert any(j.startswith("xuudb-server-") for j in lib["xuudb"])
    assert any(j.startswith("unity-server-engine-") for j in lib["unity"])
    extras = os.listdir(results["unity"]["extras_dir"])
    assert any(e.endswith("-scripts.zip") for e in extras) and any(e.endswith("-webResources.zip") for e in extras)


def test_standard_set_warm_run_runs_no_maven(standard_set, tmp_path):
    cache, _ = standard_set
    stub_dir, marker = stub_maven(tmp_path)
    rc, report, recap, stderr = run_artifacts(cache, path_prefix=stub_dir)
    assert rc == 0, stderr[-3000:]
    assert recap["localhost"]["changed"] == 0
    assert not marker.exists()


# --- the machinery, on the small self-test set -------------------------------------------------

@pytest.fixture(scope="module")
def selftest():
    """Resolve the self-test set into the real cache (only the first time needs the network)."""
    cache = real_cache()
    rc, report, _, stderr = run_artifacts(cache, extra={"artifact_supply_components": SELFTEST})
    results = item_results(report)
    assert rc == 0, "\n".join(str(r.get("msg")) for r in results.values()) or stderr[-3000:]
    return cache, results


def test_selftest_resolves_closure_with_checksums(selftest):
    cache, results = selftest
    jar_dir = Path(results["selftest-jar"]["component_dir"])
    pom_dir = Path(results["selftest-pom"]["component_dir"])
    assert jar_dir == cache / "selftest-jar-4.13.2"
    assert sorted(os.listdir(jar_dir / "lib")) == ["hamcrest-core-1.3.jar", "junit-4.13.2.jar"]
    # A pom-type coordinate contributes its dependencies, not itself (and never a .pom file).
    assert sorted(os.listdir(pom_dir / "lib")) == ["hamcrest-core-1.3.jar"]
    assert sorted(os.listdir(pom_dir / "extras")) == ["junit-4.13.2-sources.jar"]
    for component_dir in (jar_dir, pom_dir):
        assert_manifest_matches(component_dir)
        metadata = json.loads((component_dir / "artifacts.json").read_text())
        coordinates = {f["path"]: f.get("coordinate") for f in metadata["files"]}
        assert coordinates["lib/hamcrest-core-1.3.jar"].startswith("org.hamcrest:hamcrest-core:jar:1.3")
    # The Maven local repository lives in the cache too, so copying the cache is enough offline.
    assert (cache / "repository" / "junit" / "junit" / "4.13.2").is_dir()


def test_second_run_uses_no_maven(selftest, tmp_path):
    cache, _ = selftest
    stub_dir, marker = stub_maven(tmp_path)
    started = time.monotonic()
    rc, report, recap, stderr = run_artifacts(cache, extra={"artifact_supply_components": SELFTEST}, path_prefix=stub_dir)
    assert rc == 0, stderr[-3000:]
    assert not marker.exists(), "mvn was called although the cache verifies"
    results = item_results(report)
    assert all(not r["changed"] and not r["resolved"] and "Maven not run" in r["msg"] for r in results.values())
    assert recap["localhost"]["changed"] == 0
    assert time.monotonic() - started < 120


def test_offline_run_uses_verified_cache(selftest, tmp_path):
    cache, _ = selftest
    stub_dir, marker = stub_maven(tmp_path)
    rc, report, _, stderr = run_artifacts(
        cache, extra={"artifact_supply_components": SELFTEST, "artifact_supply_offline": True}, path_prefix=stub_dir
    )
    assert rc == 0, stderr[-3000:]
    assert not marker.exists()


def test_corrupted_jar_is_detected_on_a_copy(selftest, tmp_path):
    cache, results = selftest
    real_dir = Path(results["selftest-jar"]["component_dir"])
    copy_cache = tmp_path / "cache"
    copy_dir = copy_cache / real_dir.name
    shutil.copytree(real_dir, copy_dir)
    jar = copy_dir / "lib" / "junit-4.13.2.jar"
    data = bytearray(jar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    jar.write_bytes(bytes(data))
    stub_dir, marker = stub_maven(tmp_path)
    rc, report, _, _ = run_artifacts(
        copy_cache,
        extra={"artifact_supply_components": SELFTEST, "artifact_supply_select": ["selftest-jar"]},
        path_prefix=stub_dir,
    )
    assert rc != 0
    result = item_results(report)["selftest-jar"]
    assert result["failed"]
    assert "failed verification" in result["msg"] and "lib/junit-4.13.2.jar: SHA-256" in result["msg"]
    assert result["corrupt"] == ["lib/junit-4.13.2.jar"]
    assert not marker.exists()
    # A file that is not in the manifest counts as damage too.
    jar.write_bytes((real_dir / "lib" / "junit-4.13.2.jar").read_bytes())
    (copy_dir / "lib" / "stray.jar").write_bytes(b"x")
    rc, report, _, _ = run_artifacts(
        copy_cache,
        extra={"artifact_supply_components": SELFTEST, "artifact_supply_select": ["selftest-jar"]},
        path_prefix=stub_dir,
    )
    assert rc != 0 and "lib/stray.jar: not listed in SHA256SUMS" in item_results(report)["selftest-jar"]["msg"]
    # The real cache is untouched.
    assert_manifest_matches(real_dir)


def test_corruption_repair_resolves_again(selftest, tmp_path):
    """on_corruption=resolve drops the bad file (also from the local repository) and resolves again."""
    copy_cache = tmp_path / "cache"
    extra = {"artifact_supply_components": SELFTEST[:1]}
    rc, _, _, stderr = run_artifacts(copy_cache, extra=extra)
    assert rc == 0, stderr[-3000:]
    component_dir = copy_cache / "selftest-jar-4.13.2"
    good = sha256(component_dir / "lib" / "junit-4.13.2.jar")
    (component_dir / "lib" / "junit-4.13.2.jar").write_bytes(b"damaged")
    (copy_cache / "repository" / "junit" / "junit" / "4.13.2" / "junit-4.13.2.jar").write_bytes(b"damaged")
    rc, report, _, stderr = run_artifacts(copy_cache, extra={**extra, "artifact_supply_on_corruption": "resolve"})
    assert rc == 0, stderr[-3000:]
    assert item_results(report)["selftest-jar"]["resolved"]
    assert sha256(component_dir / "lib" / "junit-4.13.2.jar") == good
    assert_manifest_matches(component_dir)


def test_check_mode(selftest, tmp_path):
    cache, _ = selftest
    stub_dir, marker = stub_maven(tmp_path)
    # Warm cache: nothing would change.
    rc, report, recap, stderr = run_artifacts(cache, "--check", extra={"artifact_supply_components": SELFTEST}, path_prefix=stub_dir)
    assert rc == 0, stderr[-3000:]
    assert recap["localhost"]["changed"] == 0
    # Empty cache: reports would-change, resolves nothing, creates nothing, runs no Maven.
    empty = tmp_path / "empty-cache"
    rc, report, _, stderr = run_artifacts(empty, "--check", extra={"artifact_supply_components": SELFTEST}, path_prefix=stub_dir)
    assert rc == 0, stderr[-3000:]
    results = item_results(report)
    assert all(r["changed"] and not r["resolved"] and r["msg"].startswith("would resolve") for r in results.values())
    assert not marker.exists()
    assert not any(empty.glob("selftest-*"))


def test_push_installs_a_component_idempotently(selftest, tmp_path):
    """The push entry point installs lib/, extras/ and SHA256SUMS on a host (here: localhost)."""
    cache, results = selftest
    playbook = tmp_path / "push.yml"
    dest = tmp_path / "host" / "opt" / "selftest"
    playbook.write_text(
        "- name: Push\n  hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - name: Install the self-test component\n      ansible.builtin.include_role:\n"
        "        name: artifact_supply\n        tasks_from: push\n      vars:\n"
        "        artifact_supply_push_component: selftest-pom\n        artifact_supply_push_dest: %s\n" % dest
    )
    stub_dir, marker = stub_maven(tmp_path)
    extra = {"artifact_supply_components": SELFTEST}
    rc, report, _, stderr = run_artifacts(cache, "--check", extra=extra, path_prefix=stub_dir, playbook=playbook)
    assert rc == 0 and not dest.exists(), stderr[-3000:]
    rc, report, recap, stderr = run_artifacts(cache, extra=extra, path_prefix=stub_dir, playbook=playbook)
    assert rc == 0, stderr[-3000:]
    assert recap["localhost"]["changed"] > 0
    assert sorted(os.listdir(dest)) == ["SHA256SUMS", "extras", "lib"]
    assert (dest / "SHA256SUMS").read_bytes() == (Path(results["selftest-pom"]["component_dir"]) / "SHA256SUMS").read_bytes()
    assert_manifest_matches(dest)
    for args in ((), ("--check",)):
        rc, report, recap, stderr = run_artifacts(cache, *args, extra=extra, path_prefix=stub_dir, playbook=playbook)
        assert rc == 0 and recap["localhost"]["changed"] == 0, stderr[-3000:]
    assert not marker.exists()
    assert not list(cache.glob("*.push-*.tar"))


def test_pom_declared_repositories_are_not_used(tmp_path):
    """A repository declared in a POM is never contacted; its artifacts are reported as missing at once."""
    cache = tmp_path / "cache"
    pom_dir = cache / "repository" / "local" / "demo" / "demo-dist" / "1.0"
    pom_dir.mkdir(parents=True)
    (pom_dir / "demo-dist-1.0.pom").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.demo</groupId><artifactId>demo-dist</artifactId><version>1.0</version>"
        "<packaging>pom</packaging>"
        "<repositories><repository><id>addons</id><url>https://addons.example.invalid/maven</url></repository></repositories>"
        "<dependencies><dependency><groupId>local.demo</groupId><artifactId>addon</artifactId>"
        "<version>1.0</version></dependency></dependencies></project>"
    )
    started = time.monotonic()
    rc, report, _, _ = run_artifacts(
        cache, extra={"artifact_supply_components": [{"name": "demo", "coordinates": ["local.demo:demo-dist:1.0:pom"]}]}
    )
    assert rc != 0
    result = item_results(report)["demo"]
    assert result["missing"] == ["local.demo:addon:jar:1.0"]
    assert "not found in the repositories Maven may use" in result["msg"]
    log = Path(result["maven_log"]).read_text()
    assert "addons.example.invalid" not in log
    assert not (cache / "demo-1.0").exists()
    assert time.monotonic() - started < 300


def test_operator_settings_get_the_guard_mirror(tmp_path):
    module = load_module()
    site = tmp_path / "site-settings.xml"
    site.write_text(
        '<?xml version="1.0"?>\n<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0">'
        "<mirrors><mirror><id>site</id><mirrorOf>central</mirrorOf><url>https://mirror.site.invalid/m2</url></mirror></mirrors>"
        "</settings>"
    )
    work = tmp_path / "work"
    work.mkdir()
    path, note = module.settings_for_run(str(site), str(work))
    text = Path(path).read_text()
    assert path != str(site) and "plus the default-repository-only mirror" in note
    assert "ns0:" not in text and "<mirrorOf>*,!central</mirrorOf>" in text and "<id>site</id>" in text
    assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
    # A mirror of everything already keeps POM-declared repositories out: used unchanged.
    site.write_text(text.replace("<mirrorOf>central</mirrorOf>", "<mirrorOf>*</mirrorOf>"))
    path, note = module.settings_for_run(str(site), str(work))
    assert path == str(site)


def test_coordinate_parsing():
    module = load_module()
    coord = module.parse_coordinate("io.imunity:unity-server-engine::zip:scripts", "4.2.0")
    assert module.coordinate_text(coord) == "io.imunity:unity-server-engine:4.2.0:zip:scripts"
    assert module.coordinate_text(module.parse_coordinate("eu.unicore:gateway:2.4.1")) == "eu.unicore:gateway:2.4.1:jar"
    with pytest.raises(module.ClosureError):
        module.parse_coordinate("eu.unicore:gateway")
    with pytest.raises(module.ClosureError):
        module.parse_coordinate("eu.unicore:gate way:1")
