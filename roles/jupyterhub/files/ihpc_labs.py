"""The lab cards of the home page and of the labs API: pure functions of the hub's state.

ihpc_hub.py collects, per lab, what the hub knows (the spawner's options, its pending/ready
state, the last start's record) and what UNICORE reports with the user's token (the job's
status, its Slurm job id, state, reason, nodes and times); lab_card() turns that into one
card. No JupyterHub import, so that tests/test_jupyterhub_labs.py can test it on its own.
"""

import re

# The card states, in the words the home page shows.
STATE_WORDS = {
    "queued": "Queued in Slurm",
    "starting": "Starting",
    "running": "Running",
    "stopping": "Stopping",
    "stopped": "Stopped",
    "ended": "Ended",
    "failed": "Failed",
    "new": "Not started yet",
}
# UNICORE job states after which nothing runs any more.
UNICORE_FINAL = ("SUCCESSFUL", "FAILED")


def slurm_seconds(text):
    """Seconds of a Slurm duration: "[D-]HH:MM:SS", "MM:SS" or "M"; None for UNLIMITED or unknown."""
    text = str(text or "").strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0] * (3 - len(parts))
        h, mnt, s = parts
        return int(days) * 86400 + h * 3600 + mnt * 60 + s
    if len(parts) == 3:
        return parts[0] * 3600 + parts[1] * 60 + parts[2]
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 60


def target_label(target):
    """Where a lab runs, in words: "login node" or "partition <name>"."""
    if target == "login":
        return "login node"
    return f"partition {target}" if target else ""


def lab_state(active, ready, pending, facts, last_job):
    """(state, reason) of a lab: see STATE_WORDS. facts: what UNICORE reports now (may be {})."""
    status = facts.get("status", "")
    slurm = facts.get("slurm") or {}
    if pending == "stop":
        return "stopping", ""
    if active and ready:
        if status in UNICORE_FINAL:
            return "ended", facts.get("status_message", "")
        return "running", ""
    if active:
        if str(slurm.get("state", "")).upper() == "PENDING":
            reason = slurm.get("reason", "")
            return "queued", "" if reason in ("", "None") else reason
        return "starting", ""
    state = (last_job or {}).get("state", "")
    if state in ("failed", "stopped", "ended"):
        return state, (last_job or {}).get("message", "")
    if state in ("starting", "running"):
        # The hub stopped the lab without a record of why (e.g. its job ended while the hub was down).
        return "ended", (last_job or {}).get("message", "")
    return "new", ""


def time_left(now, facts):
    """(seconds left, end as epoch) of a running batch job from Slurm's time limit and run time
    as fetched at facts["fetched"]; (None, None) without a limit (login node, UNLIMITED)."""
    slurm = facts.get("slurm") or {}
    limit, ran = slurm_seconds(slurm.get("time_limit")), slurm_seconds(slurm.get("run_time"))
    if limit is None or ran is None or str(slurm.get("state", "")).upper() != "RUNNING":
        return None, None
    ends = facts.get("fetched", now) + limit - ran
    return max(0, int(ends - now)), int(ends)


def lab_card(settings, user, name, spawner, facts, now):
    """One card. spawner: {"options", "active", "ready", "pending", "started", "last_activity",
    "last_job"} (the hub's view); facts: UNICORE's view of the lab's job, {} when unknown."""
    last_job = spawner.get("last_job") or {}
    options = dict(spawner.get("options") or last_job.get("options") or {})
    system = options.get("system", "")
    conf = settings.get("systems", {}).get(system, {})
    target = options.get("target", "")
    state, reason = lab_state(spawner.get("active"), spawner.get("ready"), spawner.get("pending"), facts, last_job)
    slurm = facts.get("slurm") or {}
    batch = bool(target) and target != "login"
    left, ends = time_left(now, facts) if state == "running" else (None, None)
    prefix = f"/user/{user}/{name}/" if name else f"/user/{user}/"
    logs_query = f"?server={name}" if name else "?server="
    card = {
        "name": name,
        "label": name or "default",
        "system": system,
        "system_name": conf.get("display_name", system),
        "target": target,
        "where": target_label(target),
        "batch": batch,
        "nodes": options.get("nodes") if batch else None,
        "runtime_minutes": options.get("runtime") if batch else None,
        "project": options.get("project", ""),
        "state": state,
        "state_text": STATE_WORDS[state],
        "reason": reason,
        "job_id": facts.get("job_id") or last_job.get("job_id") or "",
        "node_list": slurm.get("nodes", "") if batch else (facts.get("host") or ""),
        "started": spawner.get("started") or last_job.get("requested"),
        "ended": last_job.get("ended") if state in ("stopped", "ended", "failed") else None,
        "last_activity": spawner.get("last_activity"),
        "time_left_seconds": left,
        "ends_at": ends,
        "url": prefix if state == "running" else None,
        "logs_url": f"/hub/labs/{user}/logs{logs_query}",
        "logs_api_url": f"/hub/api/ihpc/users/{user}/logs{logs_query}",
        # The choices a "start again" posts to the hub's API.
        "options": options,
        "unicore_error": facts.get("error", ""),
    }
    if batch and card["node_list"] in ("", "(null)", "None"):
        card["node_list"] = ""
    return card
