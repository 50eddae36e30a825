"""The UNICORE job the hub submits for a lab (job_description in roles/jupyterhub/files/ihpc_options.py).

A pure function of the validated options, the system's start script and the spawner's
environment; the spawner only reads the start script and calls it.
"""

import importlib.util
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ihpc_options", ROOT / "roles/jupyterhub/files/ihpc_options.py")
opts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(opts)

SCRIPT = "#!/bin/bash\n. ./.ihpc-env\nexec jupyter lab\n"
ENV = {
    "JUPYTERHUB_API_TOKEN": "tok'en $x",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    "JUPYTER_IMAGE": "lab",
    "PATH": "/usr/local/bin:/usr/bin",
    "LANG": "C.UTF-8",
    "MY_JUPYTERHUB_THING": "no",
}


def imports(job):
    return {i["To"]: i for i in job["Imports"]}


def test_login_node_job_runs_on_the_login_node_without_resources():
    job = opts.job_description(SCRIPT, "", {"system": "c1", "target": "login"}, ENV)
    assert job["Job type"] == "ON_LOGIN_NODE"
    assert "Resources" not in job and "Project" not in job
    assert job["Executable"] == "/bin/bash" and job["Arguments"] == [opts.START_SCRIPT, opts.ENV_FILE, opts.LAB_FILE]
    assert set(job) == {"Name", "Executable", "Arguments", "Imports", "Tags", "Job type"}


def test_batch_job_names_queue_nodes_runtime_in_seconds_and_project():
    options = {"system": "c1", "target": "batch", "nodes": 2, "runtime": 45, "project": "p1"}
    job = opts.job_description(SCRIPT, "gpu-lab", options, ENV)
    assert job["Job type"] == "batch"
    assert job["Resources"] == {"Queue": "batch", "Nodes": "2", "Runtime": "2700"}
    assert job["Project"] == "p1"


def test_batch_job_without_a_project_names_none():
    job = opts.job_description(SCRIPT, "", {"system": "c1", "target": "open", "nodes": 1, "runtime": 1}, ENV)
    assert job["Resources"] == {"Queue": "open", "Nodes": "1", "Runtime": "60"}
    assert "Project" not in job


def test_start_script_and_env_file_are_imported_inline():
    job = opts.job_description(SCRIPT, "", {"system": "c1", "target": "login"}, ENV)
    files = imports(job)
    assert set(files) == {opts.START_SCRIPT, opts.ENV_FILE}
    assert all(i["From"] == "inline://ihpc" for i in job["Imports"])
    assert files[opts.START_SCRIPT]["Data"] == SCRIPT


def test_env_file_carries_only_the_jupyterhub_variables_quoted_and_sorted():
    data = imports(opts.job_description(SCRIPT, "", {"system": "c1", "target": "login"}, ENV))[opts.ENV_FILE]["Data"]
    assert data == (
        "export JUPYTERHUB_API_TOKEN=%s\n" % shlex.quote("tok'en $x")
        + "export JUPYTERHUB_SERVICE_PREFIX=/user/alice/\n"
        + "export JUPYTER_IMAGE=lab\n"
    )
    # what bash makes of the file is the value itself, not an expansion of it
    shown = subprocess.run(["bash", "-c", data + 'printf %s "$JUPYTERHUB_API_TOKEN"'],
                           capture_output=True, text=True, check=True, env={})
    assert shown.stdout == "tok'en $x"
    assert opts.job_env_file({"JUPYTERHUB_PORT": 8888}) == "export JUPYTERHUB_PORT=8888\n"
    assert opts.job_env_file({}) == ""


def test_the_unnamed_server_is_called_default():
    default = opts.job_description(SCRIPT, "", {"system": "c1", "target": "login"}, {})
    assert default["Name"] == "jupyterlab-default"
    assert default["Tags"] == ["jupyterhub", "jupyterhub-server-default"]
    named = opts.job_description(SCRIPT, "big", {"system": "c1", "target": "login"}, {})
    assert named["Name"] == "jupyterlab-big"
    assert named["Tags"] == ["jupyterhub", "jupyterhub-server-big"]


def test_the_job_is_built_from_what_validate_options_returns():
    settings = {"systems": {"c1": {"display_name": "Cluster One", "login_node": True,
                                   "partitions": [{"name": "batch", "max_nodes": 2, "max_runtime_minutes": 60}]}},
                "users": {"alice": {"c1": {"projects": ["p1"]}}}}
    options = opts.validate_options(settings, "alice", {"target": ["c1|batch"], "nodes": ["2"], "runtime": ["30"]})
    job = opts.job_description(SCRIPT, "", options, ENV)
    assert job["Resources"] == {"Queue": "batch", "Nodes": "2", "Runtime": "1800"} and job["Project"] == "p1"
