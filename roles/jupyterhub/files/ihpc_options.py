"""The spawn form, the check of every start request and the UNICORE job, from the site's inventory.

Pure functions of the settings in site.json (no JupyterHub import), so that they can be
tested on their own (tests/test_jupyterhub_options.py). ihpc_hub.py uses them for the form,
for form posts and for REST API starts alike, and builds each start's job with them.
"""

import html
import json
import re
import shlex

# Names in the job directory; the start script reads the environment file.
START_SCRIPT = "ihpc-start.sh"
ENV_FILE = ".ihpc-env"
# The file in which the start script tells the hub where the lab listens.
LAB_FILE = "ihpc-lab.json"
# The rest of the spawner's environment (PATH, LANG, ...) describes the hub host, not the HPC node.
JOB_ENV_PREFIXES = ("JUPYTERHUB_", "JUPYTER_")


# ---- options: the form and its validation (pure functions of the settings) ---------------------
class OptionsError(ValueError):
    """A refused choice, with the message the user sees on the spawn form."""

    def __init__(self, message):
        super().__init__(message)
        self.jupyterhub_message = message


def user_systems(settings, username):
    """{system: {"projects": [...]}} for the systems the inventory maps this user to."""
    mapped = settings.get("users", {}).get(username, {})
    return {s: v for s, v in mapped.items() if s in settings.get("systems", {})}


def targets(settings, system):
    """Where a lab can run on a system: the login node (if offered) and each partition."""
    conf = settings["systems"][system]
    out = []
    if conf.get("login_node"):
        out.append({"name": "login", "label": "Login node", "batch": False})
    for p in conf.get("partitions", []):
        limits = []
        if p.get("max_nodes"):
            limits.append(f"up to {p['max_nodes']} node{'s' if p['max_nodes'] > 1 else ''}")
        if p.get("max_runtime_minutes"):
            limits.append(f"up to {p['max_runtime_minutes']} min")
        label = f"Partition {p['name']}" + (f" ({', '.join(limits)})" if limits else "")
        out.append({"name": p["name"], "label": label, "batch": True, "default": p.get("default", False),
                    "max_nodes": p.get("max_nodes"), "max_runtime": p.get("max_runtime_minutes")})
    return out


def _one(options, key, default=None):
    value = options.get(key, default)
    if isinstance(value, list):
        value = value[0] if value else default
    return value


def _int(value, what):
    if isinstance(value, bool):
        raise OptionsError(f"{what} must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,6}\s*", value):
        return int(value)
    raise OptionsError(f"{what} must be a whole number, not {str(value)[:20]!r}")


def validate_options(settings, username, options):
    """Checks a start request against the inventory; returns the normalised user_options.

    Accepts the form's fields (target "<system>|<where>", project "<system>|<project>") and the
    REST API's {"system", "target", "nodes", "runtime", "project"}; raises OptionsError.
    """
    options = dict(options or {})
    target = str(_one(options, "target", "") or "")
    system = str(_one(options, "system", "") or "")
    if "|" in target:
        system, target = target.split("|", 1)
    if not system:
        raise OptionsError("Choose an HPC system and where JupyterLab should run.")
    systems = settings.get("systems", {})
    if system not in systems:
        raise OptionsError(f"There is no HPC system {system[:40]!r} at this site.")
    display = systems[system]["display_name"]
    mine = user_systems(settings, username)
    if system not in mine:
        raise OptionsError(
            f"{username} has no account on {display} ({system}): JupyterLab cannot start there. "
            "Choose another system, or ask the site to map your account on this one.")
    choices = {t["name"]: t for t in targets(settings, system)}
    if target not in choices:
        raise OptionsError(f"{display} offers no {target[:40]!r}: choose one of {', '.join(choices)}.")
    chosen = choices[target]
    result = {"system": system, "target": target}
    if not chosen["batch"]:
        return result

    nodes = _int(_one(options, "nodes", 1), "Nodes")
    runtime = _int(_one(options, "runtime", chosen["max_runtime"] or 60), "Runtime")
    if nodes < 1 or (chosen["max_nodes"] and nodes > chosen["max_nodes"]):
        raise OptionsError(f"Partition {target} of {display} allows 1 to {chosen['max_nodes']} nodes, not {nodes}.")
    if runtime < 1 or (chosen["max_runtime"] and runtime > chosen["max_runtime"]):
        raise OptionsError(
            f"Partition {target} of {display} allows a runtime of 1 to {chosen['max_runtime']} minutes, not {runtime}.")
    result.update(nodes=nodes, runtime=runtime)

    projects = mine[system].get("projects", [])
    project = str(_one(options, "project", "") or "")
    if "|" in project:
        project_system, project = project.split("|", 1)
        if project_system != system:
            project = ""
    if projects:
        if not project:
            project = projects[0]
        if project not in projects:
            raise OptionsError(f"{project[:40]!r} is not one of your projects on {display} ({', '.join(projects)}).")
        result["project"] = project
    elif project:
        raise OptionsError(f"You have no projects on {display}; leave the project empty.")
    return result


# ---- the UNICORE job (a pure function of the validated options) ---------------------------------
def job_env_file(env):
    """The job's environment file: a quoted export per JupyterHub variable, sorted by name."""
    return "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in sorted(env.items())
                   if k.startswith(JOB_ENV_PREFIXES))


def job_description(script_text, server_name, options, env):
    """The UNICORE job JSON that starts a lab: options as validate_options returns them, the
    system's start script and the spawner's environment; server_name is empty for the default server."""
    server = server_name or "default"
    job = {
        "Name": f"jupyterlab-{server}",
        "Executable": "/bin/bash",
        # The start script learns the names of its env file and address file from its arguments.
        "Arguments": [START_SCRIPT, ENV_FILE, LAB_FILE],
        "Imports": [
            {"From": "inline://ihpc", "To": START_SCRIPT, "Data": script_text},
            {"From": "inline://ihpc", "To": ENV_FILE, "Data": job_env_file(env)},
        ],
        "Tags": ["jupyterhub", f"jupyterhub-server-{server}"],
    }
    if options["target"] == "login":
        job["Job type"] = "ON_LOGIN_NODE"
    else:
        job["Job type"] = "batch"
        job["Resources"] = {"Queue": options["target"], "Nodes": str(options["nodes"]),
                            "Runtime": str(options["runtime"] * 60)}
        if options.get("project"):
            job["Project"] = options["project"]
    return job


def remembered_choices(last_jobs):
    """What the form pre-selects, from the records of the user's last starts (ihpc_last_job of
    each lab): {"choice": "<system>|<where>" of the newest start, "per_target": {"<system>|<where>":
    {"nodes", "runtime", "project"}} of the newest start there}."""
    jobs = sorted((j for j in last_jobs if j and (j.get("options") or {}).get("system")),
                  key=lambda j: j.get("requested", ""))
    per_target = {}
    for job in jobs:  # oldest first: the newest start of a target wins
        o = job["options"]
        per_target[f"{o['system']}|{o.get('target', '')}"] = {k: o[k] for k in ("nodes", "runtime", "project") if k in o}
    choice = ""
    if jobs:
        o = jobs[-1]["options"]
        choice = f"{o['system']}|{o.get('target', '')}"
    return {"choice": choice, "per_target": per_target}


# A lab's name as JupyterHub accepts it in a URL, kept short for the cards.
SERVER_NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]{0,29}"


def render_form(settings, username, remembered=None, server_name="", named_servers=False):
    """The spawn form: only the systems this user is mapped to, with their limits; the choice of
    the user's last start pre-selected (remembered_choices), and a name field for a new named
    lab when the form starts the default one."""
    mine = user_systems(settings, username)
    if not mine:
        return ('<div class="alert alert-warning">Your account is not mapped to any HPC system of this site, '
                "so there is nowhere to start JupyterLab. Ask the site's support to add you.</div>")
    esc = html.escape
    remembered = remembered or {}
    per_target = remembered.get("per_target", {})
    values = [f"{s}|{t['name']}" for s in sorted(mine) for t in targets(settings, s)]
    preselect = remembered.get("choice") if remembered.get("choice") in values else values[0]
    groups, projects = [], []
    for system in sorted(mine):
        conf = settings["systems"][system]
        opts = []
        for t in targets(settings, system):
            value = f"{system}|{t['name']}"
            attrs = f' data-batch="{int(t["batch"])}"'
            if t["batch"]:
                attrs += f' data-max-nodes="{t["max_nodes"] or ""}" data-max-runtime="{t["max_runtime"] or ""}"'
                for key, last in sorted(per_target.get(value, {}).items()):
                    attrs += f' data-last-{key}="{esc(str(last))}"'
            selected = " selected" if value == preselect else ""
            opts.append(f'<option value="{esc(value)}" data-system="{esc(system)}"{attrs}{selected}>'
                        f'{esc(conf["display_name"])}: {esc(t["label"][0].lower() + t["label"][1:])}</option>')
        groups.append(f'<optgroup label="{esc(conf["display_name"])} ({esc(system)})">{"".join(opts)}</optgroup>')
        for p in mine[system].get("projects", []):
            projects.append(f'<option value="{esc(system)}|{esc(p)}" data-system="{esc(system)}">{esc(p)}</option>')
    if server_name:
        name_row = f'<p class="mb-3">Lab: <strong id="ihpc-lab-name">{esc(server_name)}</strong></p>'
    elif named_servers:
        name_row = f"""<div class="mb-3">
    <label for="ihpc-name" class="form-label">Lab name (empty: your default lab)</label>
    <input id="ihpc-name" type="text" class="form-control" pattern="{SERVER_NAME_PATTERN}" maxlength="30"
           placeholder="e.g. analysis" title="letters, digits, dot, dash and underscore">
  </div>"""
    else:
        name_row = ""
    user_js = json.dumps(username).replace("<", "\\u003c")
    return f"""
<div class="ihpc-spawn-form">
  {name_row}
  <div class="mb-3">
    <label for="ihpc-target" class="form-label">HPC system and where JupyterLab runs</label>
    <select id="ihpc-target" name="target" class="form-select">{''.join(groups)}</select>
  </div>
  <div id="ihpc-batch">
    <div class="mb-3">
      <label for="ihpc-nodes" class="form-label">Nodes</label>
      <input id="ihpc-nodes" name="nodes" type="number" class="form-control" min="1" value="1">
    </div>
    <div class="mb-3">
      <label for="ihpc-runtime" class="form-label">Runtime (minutes)</label>
      <input id="ihpc-runtime" name="runtime" type="number" class="form-control" min="1" value="30">
    </div>
    <div class="mb-3" id="ihpc-project-row">
      <label for="ihpc-project" class="form-label">Project (charged as the Slurm account)</label>
      <select id="ihpc-project" name="project" class="form-select">{''.join(projects)}</select>
    </div>
  </div>
</div>
<script type="text/javascript">
(function() {{
  var target = document.getElementById("ihpc-target");
  function update() {{
    var o = target.options[target.selectedIndex];
    var batch = o.getAttribute("data-batch") === "1";
    document.getElementById("ihpc-batch").style.display = batch ? "" : "none";
    var nodes = document.getElementById("ihpc-nodes"), runtime = document.getElementById("ihpc-runtime");
    nodes.max = o.getAttribute("data-max-nodes") || "";
    runtime.max = o.getAttribute("data-max-runtime") || "";
    // The values of the user's last start on this partition, where there was one.
    if (o.hasAttribute("data-last-nodes")) {{ nodes.value = o.getAttribute("data-last-nodes"); }}
    if (o.hasAttribute("data-last-runtime")) {{ runtime.value = o.getAttribute("data-last-runtime"); }}
    if (runtime.max && +runtime.value > +runtime.max) {{ runtime.value = runtime.max; }}
    var project = document.getElementById("ihpc-project"), any = false;
    var last = o.getAttribute("data-system") + "|" + (o.getAttribute("data-last-project") || "");
    for (var i = 0; i < project.options.length; i++) {{
      var mine = project.options[i].getAttribute("data-system") === o.getAttribute("data-system");
      project.options[i].hidden = !mine; project.options[i].disabled = !mine;
      if (mine && (!any || project.options[i].value === last)) {{ project.selectedIndex = i; any = true; }}
    }}
    document.getElementById("ihpc-project-row").style.display = any ? "" : "none";
  }}
  target.addEventListener("change", update);
  update();
  // A name makes it a named lab: the form posts to spawn/<user>/<name> (keeping the query, _xsrf).
  var name = document.getElementById("ihpc-name");
  if (name && name.form) {{
    name.form.addEventListener("submit", function() {{
      var value = name.value.trim();
      if (!value) {{ return; }}
      var action = name.form.getAttribute("action") || window.location.search;
      var cut = action.indexOf("?"), query = cut < 0 ? "" : action.slice(cut);
      name.form.setAttribute("action", window.jhdata.base_url + "spawn/" + encodeURIComponent({user_js}) + "/" +
                             encodeURIComponent(value) + query);
    }});
  }}
}})();
</script>
"""
