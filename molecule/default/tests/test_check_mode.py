"""A converged site is stable: `site.yml --check --diff` runs cleanly and would change nothing."""

from conftest import REPO, run_playbook


def test_check_diff_on_converged_site_changes_nothing(inventory):
    run = run_playbook(REPO / "site.yml", "-i", inventory, "--check", "--diff", timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    changed = {host: counters["changed"] for host, counters in run.recap.items()}
    assert changed, f"no PLAY RECAP found:\n{run.stdout[-2000:]}"
    assert all(n == 0 for n in changed.values()), f"--check reports changes:\n{run.stdout[-6000:]}"
