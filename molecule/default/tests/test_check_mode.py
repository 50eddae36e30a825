"""A converged site is stable: `site.yml --check --diff` runs cleanly and would change nothing."""

import os
import re
import subprocess
from pathlib import Path

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def test_check_diff_on_converged_site_changes_nothing(inventory):
    # Colour codes around host names would hide the recap from the parser below.
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    run = subprocess.run(
        ["ansible-playbook", str(PROJECT / "site.yml"), "-i", inventory, "--check", "--diff"],
        capture_output=True, text=True, timeout=1800, check=False, env=env,
    )
    recap = run.stdout[run.stdout.rfind("PLAY RECAP"):]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    changed = {host: int(n) for host, n in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", recap, re.M)}
    assert changed, f"no PLAY RECAP found:\n{run.stdout[-2000:]}"
    assert all(n == 0 for n in changed.values()), f"--check reports changes:\n{run.stdout[-6000:]}"
