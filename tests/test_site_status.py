"""The health report's host module (library/site_status.py): its parsing, without a host."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("site_status", ROOT / "library" / "site_status.py")
status = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(status)


def test_partitions_sum_nodes_and_idle_ones_per_partition(monkeypatch):
    sinfo = "batch|up|1|idle\nbatch|up|1|alloc\nlong|up|2|idle*\ndebug|down|1|down*"
    monkeypatch.setattr(status, "run", lambda argv, timeout=15: (0, sinfo))
    parts = {p["name"]: p for p in status.partitions()}
    assert parts["batch"] == {"name": "batch", "available": "up", "nodes": 2, "idle": 1, "states": "1 idle, 1 alloc"}
    assert (parts["long"]["idle"], parts["debug"]["available"]) == (2, "down")
    monkeypatch.setattr(status, "run", lambda argv, timeout=15: (1, "slurm_load_partitions: Unable to contact slurm controller"))
    assert status.partitions()[0]["available"] == "down"


def test_versions_from_a_release_directory_a_package_or_a_command(monkeypatch, tmp_path):
    for name in ("gateway-2.4.0", "gateway-2.10.1", "xuudb-2.13.3"):
        (tmp_path / name).mkdir()
    assert status.version_of({"version_glob": f"{tmp_path}/gateway-*"}) == "2.10.1"
    assert status.version_of({"version_glob": f"{tmp_path}/unicorex-*"}) == "not installed"
    (tmp_path / "unity-server-engine-4.2.0.jar").touch()
    (tmp_path / "unity-server-engine-api-4.2.0.jar").touch()
    assert status.version_of({"version_glob": f"{tmp_path}/unity-server-engine-*.jar"}) == "4.2.0"
    monkeypatch.setattr(status, "run", lambda argv, timeout=15: (0, "1:9.9p1-1\n"))
    assert status.version_of({"version_package": "openssh-server"}).startswith("1:9.9p1")
    monkeypatch.setattr(status, "run", lambda argv, timeout=15: (0, "5.5.4\nmore"))
    assert status.version_of({"version_command": ["python", "-c", "..."]}) == "5.5.4"


def test_listening_ports_from_ss(monkeypatch):
    ss = "LISTEN 0 128 0.0.0.0:8081 0.0.0.0:*\nLISTEN 0 128 [::]:443 [::]:*\nLISTEN 0 5 127.0.0.1:34463 0.0.0.0:*"
    monkeypatch.setattr(status, "run", lambda argv, timeout=15: (0, ss))
    assert status.listening_ports() == {8081, 443, 34463}


def test_running_labs_are_counted_per_system_from_the_hubs_sqlite(tmp_path):
    import json
    import sqlite3

    db = tmp_path / "jupyterhub.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE spawners (id INTEGER, server_id INTEGER, user_options TEXT)")
    conn.executemany("INSERT INTO spawners VALUES (?, ?, ?)", [
        (1, 1, json.dumps({"system": "c1", "target": "login"})), (2, 2, json.dumps({"system": "c1"})),
        (3, None, json.dumps({"system": "c2"})), (4, 3, json.dumps({"system": "c2"}))])
    conn.commit()
    conn.close()
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"db_url": f"sqlite:///{db}"}))
    assert status.labs(str(site)) == {"c1": 2, "c2": 1}
    site.write_text(json.dumps({"db_url": ""}))
    try:
        status.labs(str(site))
        raise AssertionError("a non-sqlite database was counted")
    except ValueError as e:
        assert "not sqlite" in str(e)
