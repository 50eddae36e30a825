"""The whole chain on the containerised test cluster: `molecule test` (default scenario).

Molecule's full sequence runs: destroy, syntax, create, prepare, converge, idempotence
(a second converge must report changed=0), verify (the behaviour tests in
molecule/default/tests, including a --check --diff run), side_effect (inventory changes),
destroy. Its output streams to the terminal and to logs/molecule-default.log.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 75 * 60
# molecule announces each action: "[default > converge] Executing" (plain) or
# "default ➜ converge: Executing" (with colour), then "... Executed: Successful".
ACTION_RE = re.compile(r"default\W+(\w+)\]?:?\s+(Executing|Executed)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _phase_table(phases):
    """'action  seconds' lines in the order molecule ran them."""
    width = max((len(name) for name, _ in phases), default=6)
    lines = [f"  {name:<{width}}  {secs:7.1f} s" for name, secs in phases]
    return "\n".join(["molecule phase times:"] + lines)


def test_molecule_default_scenario(capsys):
    log_path = ROOT / "logs" / "molecule-default.log"
    log_path.parent.mkdir(exist_ok=True)
    env = dict(os.environ, PY_COLORS="0", ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    start = time.monotonic()
    phases, current = [], None
    with capsys.disabled(), log_path.open("w") as log:
        proc = subprocess.Popen(
            ["molecule", "test", "-s", "default"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                log.flush()  # scripts/test watches the log for the verify phase
                match = ACTION_RE.search(ANSI_RE.sub("", line))
                if match and match.group(2) == "Executing":
                    current = (match.group(1), time.monotonic())
                elif match and current and match.group(1) == current[0]:
                    phases.append((current[0], time.monotonic() - current[1]))
                    current = None
                if time.monotonic() - start > TIMEOUT_SECONDS:
                    proc.kill()
                    break
        finally:
            rc = proc.wait()
        if current:
            phases.append((current[0] + " (unfinished)", time.monotonic() - current[1]))
        minutes = (time.monotonic() - start) / 60
        summary = _phase_table(phases)
        print(f"\n{summary}\nmolecule test (default): exit {rc} after {minutes:.1f} min; log: {log_path}")
        (log_path.parent / "molecule-phases.txt").write_text(summary + "\n")
    assert rc == 0, f"molecule test failed (exit {rc}); see {log_path}"
