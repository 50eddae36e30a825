"""What the tests share: the ansible-playbook they run and the one reader of a run's counters.

Test modules import these (`from conftest import run_playbook`); the scenario's behaviour
tests load them through molecule/default/tests/conftest.py.

How a run's counters are read: every run writes its PLAY RECAP counters as JSON to a file of
its own (the callback plugin tests/callback_plugins/stats_file.py, named by IHPC_STATS_FILE),
and read_recap() reads that file. A stats file rather than the JSON stdout callback, because
many tests check the human-readable output (messages, diffs, "fatal: [host]: UNREACHABLE!"):
the configured stdout callback keeps printing them, and the callbacks ansible.cfg enables stay
as they are. The plugin needs no enabling and uses only the callback interface that
ansible-core 2.19 and 2.21 share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The ansible-playbook installed beside the Python that runs the tests (the project's .venv),
# never another one that happens to be on PATH.
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
STATS_CALLBACK_DIR = REPO / "tests" / "callback_plugins"
# Colour codes would end up in the captured output that tests search.
PLAIN_OUTPUT = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0"}


def stats_env(stats_file, env=None) -> dict:
    """`env` (default: this process's environment) plus what makes ansible-playbook write its
    counters to stats_file. (ANSIBLE_CALLBACK_PLUGINS would replace a callback_plugins setting
    of ansible.cfg; neither the repository's nor molecule's sets one.)"""
    env = dict(os.environ if env is None else env)
    paths = [str(STATS_CALLBACK_DIR)] + [p for p in env.get("ANSIBLE_CALLBACK_PLUGINS", "").split(os.pathsep) if p]
    env.update(ANSIBLE_CALLBACK_PLUGINS=os.pathsep.join(dict.fromkeys(paths)), IHPC_STATS_FILE=str(stats_file))
    return env


def read_recap(stats_file) -> dict:
    """Host -> counters (ok, changed, unreachable, failed, skipped, rescued, ignored) of a run.

    One set per run: ansible-playbook counts all of its playbook files together. A run that
    stopped before its first play (an inventory that cannot be parsed) has none: {}.
    """
    path = Path(stats_file)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_playbook(*args, env=None, cwd=REPO, timeout=600) -> subprocess.CompletedProcess:
    """Runs ansible-playbook with args, output captured as text, never colored.

    env: variables to set on top of this process's environment. Returns the CompletedProcess
    with .recap, the run's host -> counters (read_recap).
    """
    with tempfile.TemporaryDirectory(prefix="ansible-stats-") as tmp:
        stats_file = Path(tmp) / "stats.json"
        full_env = stats_env(stats_file, dict(os.environ, **PLAIN_OUTPUT, **(env or {})))
        result = subprocess.run([str(ANSIBLE_PLAYBOOK), *map(str, args)], cwd=cwd, env=full_env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        result.recap = read_recap(stats_file)
    return result
