"""The lab start script (roles/jupyterhub/templates/start.sh.j2) on the controller, with a fake lab.

The real script runs through UNICORE on the nodes (molecule/default/tests/test_jupyterhub.py);
here its port handling runs on its own: a port taken between the script's pick and the lab's
bind makes it pick again, and a socket that is not the lab's own is never reported to the hub.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "roles" / "jupyterhub" / "templates" / "start.sh.j2"

# The fake jupyterhub-singleuser: listens on the port of JUPYTERHUB_SERVICE_URL, unless told
# (FAKE_LAB_MODE) that another process takes the port first ("taken-once": only at the first
# start) or that someone else listens there while the lab never does ("squatted").
FAKE_LAB = textwrap.dedent("""\
    #!{python}
    import os, socket, subprocess, sys, time, urllib.parse
    port = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"]).port
    mode, marker = os.environ["FAKE_LAB_MODE"], os.environ["FAKE_LAB_MARKER"]
    squat = [sys.executable, "-c", "import socket, sys, time; s = socket.socket(); "
             "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); open(sys.argv[2], 'w').write(sys.argv[1]); "
             "time.sleep(30)", str(port), marker]
    if mode == "squatted" or (mode == "taken-once" and not os.path.exists(marker)):
        subprocess.Popen(squat, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(marker):
                break
            time.sleep(0.05)
        if mode == "taken-once":
            sys.exit(1)  # what jupyter-server does: "port ... is not available"
        time.sleep(7)  # past the script's wait for the lab (jupyterhub_http_timeout 3 s here)
        sys.exit(0)
    s = socket.socket()
    s.bind(("0.0.0.0", port))
    s.listen()
    time.sleep(30)
""")


def render(tmp_path):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: "# " + text
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to(sys.executable)
    lab = prefix / "bin" / "jupyterhub-singleuser"
    lab.write_text(FAKE_LAB.format(python=sys.executable))
    lab.chmod(0o755)
    script = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="managed", __system="c1", jupyterhub_http_timeout=3, jupyterhub_lab_ca_bundle="/dev/null",
        __sys={"display_name": "Cluster One", "jupyter_env_prefix": str(prefix), "jupyter_hub_api_url": "http://hub/api"})
    path = tmp_path / "start.sh"
    path.write_text(script)
    return path


def run(tmp_path, mode, timeout=60):
    script = render(tmp_path)
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    (jobdir / "env").write_text("export JUPYTERHUB_USER=alice JUPYTERHUB_SERVER_NAME=lab "
                                "JUPYTERHUB_SERVICE_PREFIX=/user/alice/lab/\n")
    marker = tmp_path / "squatted-port"
    env = dict(os.environ, HOME=str(tmp_path), FAKE_LAB_MODE=mode, FAKE_LAB_MARKER=str(marker))
    proc = subprocess.Popen(["bash", str(script), "env", "lab.json"], cwd=jobdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lab_file = jobdir / "lab.json"
    try:
        proc.wait(timeout=timeout) if mode == "squatted" else None
    except subprocess.TimeoutExpired:
        pass
    for _ in range(200):
        if lab_file.exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.1"])
    found = json.loads(lab_file.read_text()) if lab_file.exists() else None
    squatted = int(marker.read_text()) if marker.exists() else None
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        pass  # the script has ended
    _, err = proc.communicate(timeout=30)
    subprocess.run(["pkill", "-f", str(marker)], check=False)  # the fake squatters
    return found, squatted, err


needs_ss = pytest.mark.skipif(shutil.which("ss") is None,
                              reason="the controller lacks ss (iproute2, which scripts/bootstrap installs)")


@needs_ss
def test_a_lab_that_listens_is_reported_with_its_port(tmp_path):
    found, squatted, err = run(tmp_path, "listen")
    assert found and squatted is None, err
    assert found["port"] > 0 and found["listening"] >= found["started"] > 0, found


@needs_ss
def test_a_port_taken_before_the_lab_binds_it_is_replaced_by_another(tmp_path):
    found, squatted, err = run(tmp_path, "taken-once")
    assert squatted and found, err
    assert found["port"] != squatted, (found, squatted)
    assert f"Port {squatted} was taken before JupyterLab could listen on it" in err, err


@needs_ss
def test_a_socket_of_another_process_on_the_port_is_never_reported(tmp_path):
    # The lab never listens; another process does, on the lab's port: no lab file.
    found, squatted, err = run(tmp_path, "squatted", timeout=20)
    assert squatted, err
    assert found is None, f"the script reported a socket that is not the lab's: {found}"
