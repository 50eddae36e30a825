"""jupyterhub-idle-culler's configuration: each system's own idle limit decides.

The hub starts the culler as a managed service (ihpc_hub.configure) with IHPC_SITE_JSON set
to site.json, where each system has idle_timeout_minutes (hpc_systems.<system>.
jupyter_idle_timeout_minutes; 0: never). A lab is culled when it has had no activity (traffic
through the proxy, or activity its Jupyter server reports: kernels, terminals, connections)
for longer than its system's limit; stopping it ends its UNICORE job and so its Slurm job.
"""

import json
import os

with open(os.environ["IHPC_SITE_JSON"]) as f:
    SYSTEMS = json.load(f)["systems"]


def idle_too_long(*, inactive, inactive_limit, server, **kwargs):
    """The culler's arbiter: True when the lab's system has a limit and the lab is past it."""
    system = (server.get("user_options") or {}).get("system", "")
    minutes = (SYSTEMS.get(system) or {}).get("idle_timeout_minutes") or 0
    return bool(minutes) and inactive.total_seconds() >= minutes * 60


c = get_config()  # noqa: F821
c.IdleCuller.cull_arbiter_hook = idle_too_long
