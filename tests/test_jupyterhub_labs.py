"""The home page's lab cards (roles/jupyterhub/files/ihpc_labs.py): pure functions of the hub's
view of a lab and of UNICORE's view of its job; no hub or container needed."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ihpc_labs", ROOT / "roles/jupyterhub/files/ihpc_labs.py")
labs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labs)

SETTINGS = {"systems": {"c1": {"display_name": "Cluster One"}, "c2": {"display_name": "Cluster Two"}}}
BATCH = {"system": "c1", "target": "batch", "nodes": 2, "runtime": 30, "project": "p1"}
NOW = 1_000_000.0


def spawner(**kw):
    view = {"options": None, "active": False, "ready": False, "pending": None, "started": None,
            "last_activity": None, "last_job": {}}
    view.update(kw)
    return view


def test_slurm_durations():
    assert labs.slurm_seconds("00:10:00") == 600
    assert labs.slurm_seconds("1-02:03:04") == 93784
    assert labs.slurm_seconds("2-03") == 2 * 86400 + 3 * 3600
    assert labs.slurm_seconds("05:30") == 330
    assert labs.slurm_seconds("45") == 2700
    for unknown in ("UNLIMITED", "", None, "INVALID", "Partition_Limit"):
        assert labs.slurm_seconds(unknown) is None, unknown


def test_a_running_batch_lab_shows_its_job_nodes_and_time_left():
    facts = {"status": "RUNNING", "job_id": "42", "fetched": NOW - 5,
             "slurm": {"state": "RUNNING", "reason": "None", "nodes": "c1-node[1-2]", "time_limit": "00:30:00",
                       "run_time": "00:10:00"}}
    card = labs.lab_card(SETTINGS, "alice", "big", spawner(options=BATCH, active=True, ready=True,
                                                           started="2026-01-01T10:00:00Z"), facts, NOW)
    assert card["state"] == "running" and card["state_text"] == "Running"
    assert (card["system_name"], card["where"], card["nodes"], card["runtime_minutes"], card["project"]) == \
        ("Cluster One", "partition batch", 2, 30, "p1")
    assert (card["job_id"], card["node_list"]) == ("42", "c1-node[1-2]")
    # 20 minutes were left when UNICORE was asked, 5 s ago.
    assert card["time_left_seconds"] == 1195 and card["ends_at"] == int(NOW - 5 + 1200)
    assert card["url"] == "/user/alice/big/" and card["logs_url"] == "/hub/labs/alice/logs?server=big"
    assert card["options"] == BATCH


def test_a_queued_lab_shows_slurms_reason_and_no_time_left():
    facts = {"status": "QUEUED", "job_id": "43", "fetched": NOW,
             "slurm": {"state": "PENDING", "reason": "Resources", "nodes": "", "time_limit": "00:30:00", "run_time": "0:00"}}
    card = labs.lab_card(SETTINGS, "alice", "", spawner(options=BATCH, active=True, pending="spawn"), facts, NOW)
    assert (card["state"], card["reason"], card["job_id"]) == ("queued", "Resources", "43")
    assert card["time_left_seconds"] is None and card["url"] is None
    assert card["label"] == "default" and card["logs_url"] == "/hub/labs/alice/logs?server="


def test_a_login_node_lab_names_its_node_and_has_no_runtime():
    login = {"system": "c2", "target": "login"}
    card = labs.lab_card(SETTINGS, "bob", "x", spawner(options=login, active=True, ready=True),
                         {"status": "RUNNING", "host": "c2-login", "fetched": NOW}, NOW)
    assert (card["where"], card["batch"], card["node_list"], card["time_left_seconds"]) == \
        ("login node", False, "c2-login", None)
    assert card["nodes"] is None and card["runtime_minutes"] is None


def test_stopped_failed_and_ended_labs_keep_their_choices_for_start_again():
    last = {"options": BATCH, "requested": "2026-01-01T10:00:00Z", "state": "failed", "job_id": "44",
            "message": "The JupyterLab job ended before JupyterLab was up", "ended": "2026-01-01T10:01:00Z"}
    card = labs.lab_card(SETTINGS, "alice", "b", spawner(last_job=last), {"status": "FAILED", "fetched": NOW}, NOW)
    assert (card["state"], card["state_text"], card["job_id"]) == ("failed", "Failed", "44")
    assert "ended before" in card["reason"] and card["ended"] == "2026-01-01T10:01:00Z"
    assert card["options"] == BATCH and card["url"] is None and card["started"] == "2026-01-01T10:00:00Z"
    assert labs.lab_card(SETTINGS, "alice", "b", spawner(last_job=dict(last, state="stopped", message="Stopped.")),
                         {}, NOW)["state"] == "stopped"
    # A lab the hub stopped without a record of why (a hub that was down when its job ended).
    assert labs.lab_card(SETTINGS, "alice", "b", spawner(last_job=dict(last, state="running")), {}, NOW)["state"] == "ended"
    # A stop in progress, and a lab whose job ended before the hub's next poll.
    assert labs.lab_card(SETTINGS, "alice", "b", spawner(options=BATCH, active=True, pending="stop"), {}, NOW)["state"] \
        == "stopping"
    assert labs.lab_card(SETTINGS, "alice", "b", spawner(options=BATCH, active=True, ready=True),
                         {"status": "SUCCESSFUL", "fetched": NOW}, NOW)["state"] == "ended"
