"""The compute nodes' converged-state record (library/node_state.py) and its inputs digest
(filter_plugins/site_node_state.py), on files in a temporary directory.

A record made after a run must hold for an unchanged node and stop holding when a recorded
file's content, mode or existence, a shell pattern's matches or the run's inputs change.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The module imports its shared code as Ansible ships it to the host.
_load("ansible.module_utils.site_file_state", "module_utils/site_file_state.py")
node_state = _load("node_state", "library/node_state.py")
site_node_state = _load("site_node_state", "filter_plugins/site_node_state.py")


class FakeModule:
    check_mode = False

    def __init__(self, paths, globs=()):
        self.params = {"paths": list(paths), "globs": list(globs), "units": []}


def recorded(tmp_path, monkeypatch, globs=()):
    """A node with two managed files and a record of them; the ALWAYS paths are left out."""
    monkeypatch.setattr(node_state, "ALWAYS", [])
    conf = tmp_path / "etc" / "slurm.conf"
    conf.parent.mkdir()
    conf.write_text("ClusterName=c1\n")
    key = tmp_path / "etc" / "munge.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o400)
    record = tmp_path / "state" / "node-state.json"
    assert node_state.record(FakeModule([str(conf), str(key)], globs), str(record), "d1") is True
    return record, conf, key


def test_an_unchanged_node_is_converged(tmp_path, monkeypatch):
    record, _, _ = recorded(tmp_path, monkeypatch)
    assert node_state.check(str(record), "d1") == (True, "")
    assert oct(record.stat().st_mode & 0o777) == "0o600"


def test_recording_the_same_state_again_changes_nothing(tmp_path, monkeypatch):
    record, conf, key = recorded(tmp_path, monkeypatch)
    assert node_state.record(FakeModule([str(conf), str(key)]), str(record), "d1") is False


def test_no_record_means_the_full_path(tmp_path):
    converged, reason = node_state.check(str(tmp_path / "missing.json"), "d1")
    assert not converged and "no record" in reason


def test_other_inputs_mean_the_full_path(tmp_path, monkeypatch):
    record, _, _ = recorded(tmp_path, monkeypatch)
    converged, reason = node_state.check(str(record), "d2")
    assert not converged and "changed since the recorded run" in reason


def test_an_edited_file_is_found(tmp_path, monkeypatch):
    record, conf, _ = recorded(tmp_path, monkeypatch)
    conf.write_text("ClusterName=c1\n# edited by hand\n")
    converged, reason = node_state.check(str(record), "d1")
    assert not converged and reason == f"file {conf} differs from the recorded run"


def test_a_changed_mode_is_found(tmp_path, monkeypatch):
    record, _, key = recorded(tmp_path, monkeypatch)
    key.chmod(0o644)
    assert node_state.check(str(record), "d1") == (False, f"file {key} differs from the recorded run")


def test_a_removed_file_is_found(tmp_path, monkeypatch):
    record, conf, _ = recorded(tmp_path, monkeypatch)
    conf.unlink()
    assert not node_state.check(str(record), "d1")[0]


def test_a_new_match_of_a_pattern_is_found(tmp_path, monkeypatch):
    pattern = str(tmp_path / "etc" / "ca-*.pem")
    record, _, _ = recorded(tmp_path, monkeypatch, globs=[pattern])
    (tmp_path / "etc" / "ca-2.pem").write_text("old CA\n")
    assert node_state.check(str(record), "d1") == (False, f"pattern {pattern} differs from the recorded run")


def test_an_unreadable_record_means_the_full_path(tmp_path):
    record = tmp_path / "node-state.json"
    record.write_text("{not json")
    assert not node_state.check(str(record), "d1")[0]


def test_the_digest_follows_inputs_secrets_and_role_variables(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "munge.key").write_bytes(b"a" * 32)
    host = {"site_secrets_dir": str(secrets)}
    roles = ["munge", "slurm"]
    base = site_node_state.node_state_digest({"system": "c1"}, host, roles)
    assert site_node_state.node_state_digest({"system": "c1"}, dict(host), roles) == base
    assert site_node_state.node_state_digest({"system": "c2"}, host, roles) != base
    assert site_node_state.node_state_digest({"system": "c1"}, dict(host, slurm_config={"A": 1}), roles) != base
    # A variable that is not one of the roles' does not count.
    assert site_node_state.node_state_digest({"system": "c1"}, dict(host, other_role_port=1), roles) == base
    (secrets / "munge.key").write_bytes(b"b" * 32)
    assert site_node_state.node_state_digest({"system": "c1"}, host, roles) != base
