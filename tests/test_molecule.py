"""The whole chain on the containerised test cluster: `molecule test` (default scenario).

Molecule's full sequence runs: destroy, syntax, create, prepare, converge, idempotence
(a second converge must report changed=0), verify (the behaviour tests in
molecule/default/tests, including a --check --diff run), side_effect (inventory changes),
destroy. Its output streams to the terminal and to logs/molecule-default.log.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 75 * 60


def test_molecule_default_scenario(capsys):
    log_path = ROOT / "logs" / "molecule-default.log"
    log_path.parent.mkdir(exist_ok=True)
    env = dict(os.environ, PY_COLORS="0", ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    start = time.monotonic()
    with capsys.disabled(), log_path.open("w") as log:
        proc = subprocess.Popen(
            ["molecule", "test", "-s", "default"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                if time.monotonic() - start > TIMEOUT_SECONDS:
                    proc.kill()
                    break
        finally:
            rc = proc.wait()
        minutes = (time.monotonic() - start) / 60
        print(f"\nmolecule test (default): exit {rc} after {minutes:.1f} min; log: {log_path}")
    assert rc == 0, f"molecule test failed (exit {rc}); see {log_path}"
