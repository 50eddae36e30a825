"""Validation of the site inventory (playbooks/validate.yml, the first play of site.yml).

Each bad inventory is a copy of inventories/molecule with one mutation. The run must fail
with a message naming the key path and the rule, and must not touch any host: every host of
these copies points at a closed loopback port, so a contact attempt would show as UNREACHABLE,
and the PLAY RECAP may list only localhost.

The ansible-playbook runs are started together by one fixture (a few at a time) because each
costs about a second of start-up; the tests then only inspect the results. Cases marked with no
playbook get the same checks in-process (schema + filter plugin on the mutated files), which
keeps the whole module well under a minute.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import run_playbook

REPO = Path(__file__).resolve().parents[1]
MOLECULE_INVENTORY = REPO / "inventories" / "molecule"
EXAMPLE_INVENTORY = REPO / "inventories" / "example"
SKELETON = REPO / "templates" / "inventory"
# The site artifact mirror beside the checkout, as inventories/molecule resolves it.
SITE_MIRROR = (REPO / ".." / "shared" / "mirror").resolve()
SCHEMA = json.loads((REPO / "schemas" / "site.schema.json").read_text())
PARALLEL_RUNS = 3

# Every host of a test inventory: ssh to a closed loopback port, with no retries.
UNUSABLE_HOST_VARS = {
    "ansible_connection": "ssh",
    "ansible_host": "127.0.0.1",
    "ansible_port": 9,
    "ansible_user": "nobody",
    "ansible_ssh_common_args": "-o BatchMode=yes -o ConnectTimeout=2",
    "ansible_ssh_retries": 0,
}


# The filter plugin files of the validation, one per concern (docs/inventory.md, "Validation").
PLUGIN_FILES = ("site_model_checks", "site_model_messages", "site_model_variables", "site_model_placeholders")


def _load_filters():
    """Every validation filter by name, taken from the files' FilterModule as Ansible takes them."""
    filters = {}
    for name in PLUGIN_FILES:
        spec = importlib.util.spec_from_file_location(name, REPO / "filter_plugins" / (name + ".py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        provided = module.FilterModule().filters()
        # Ansible would let one file's filter silently replace another's of the same name.
        assert not set(provided) & set(filters), "%s redefines %s" % (name, sorted(set(provided) & set(filters)))
        filters.update(provided)
    return types.SimpleNamespace(**filters)


site_model = _load_filters()


# --- mutations of the molecule inventory -------------------------------------------------
# Each takes {"hosts": <hosts.yml>, "site": <group_vars/all/site.yml>} and changes it in place.


def _c1(inv):
    return inv["site"]["hpc_systems"]["c1"]


def _rename_c2(inv):
    systems = inv["site"]["hpc_systems"]
    systems["c-2"] = systems.pop("c2")
    inv["site"]["hpc_users"][0]["systems"]["c-2"] = inv["site"]["hpc_users"][0]["systems"].pop("c2")


def _empty_compute_group(inv):
    inv["hosts"]["test_containers"]["children"]["c1_compute"] = {"hosts": {}}


def _drop_xuudb_group(inv):
    del inv["hosts"]["test_containers"]["children"]["unicore_xuudb"]


def _share_node(inv):
    inv["hosts"]["test_containers"]["children"]["c2_compute"]["hosts"]["c1-node2"] = None


def _duplicate_user(inv):
    inv["site"]["hpc_users"].append({"name": "alice", "systems": {"c1": {"xlogin": "alice2", "uid": 20010}}})


def _xlogin_two_uids(inv):
    inv["site"]["hpc_users"].append({"name": "carol", "systems": {"c1": {"xlogin": "alice", "uid": 20003}}})


def _rename_top_key(old, new):
    def mutate(inv):
        inv["site"][new] = inv["site"].pop(old)
    return mutate


def _host_var(host, name, value):
    """Set a host variable in hosts.yml (the host is looked up in the groups that list it)."""
    def mutate(inv):
        for group in inv["hosts"]["test_containers"]["children"].values():
            hosts = group.get("hosts") or {}
            if host in hosts:
                hosts[host] = dict(hosts[host] or {}, **{name: value})
    return mutate


def _map_to(xlogin, uid=None):
    def mutate(inv):
        account = inv["site"]["hpc_users"][1]["systems"]["c1"]
        account["xlogin"] = xlogin
        if uid is not None:
            account["uid"] = uid
    return mutate


# (id, mutation, [texts the output must contain: key path and rule], playbook or None for the
#  in-process check, extra ansible-playbook arguments)
BAD_CASES = [
    ("site-name-pattern", lambda i: i["site"]["site"].update(name="IHPC Test"),
     ["site.name:", "must be a lower-case letter"], "site.yml", []),
    ("site-domain-missing", lambda i: i["site"]["site"].pop("domain"),
     ["site.domain: required key is missing"], "validate.yml", []),
    ("hub-url-not-https", lambda i: i["site"]["site"].update(public_hub_url="http://hub.ihpc.test"),
     ["site.public_hub_url:", "must be an https:// URL"], None, []),
    ("system-name-pattern", _rename_c2,
     ["hpc_systems.c-2: invalid name 'c-2'", "Slurm ClusterName"], "validate.yml", []),
    ("system-key-typo", lambda i: _c1(i).update(partition=_c1(i).pop("partitions")),
     ["hpc_systems.c1.partition: unknown key", "hpc_systems.c1.partitions: required key is missing"],
     "site.yml", ["--check"]),
    ("no-systems", lambda i: i["site"].update(hpc_systems={}),
     ["hpc_systems: must have at least 1 entry"], None, []),
    ("port-is-string", lambda i: _c1(i).update(unicorex_port="7777"),
     ["hpc_systems.c1.unicorex_port: must be an integer, found a string"], "validate.yml", []),
    ("port-below-1024", lambda i: _c1(i).update(unicorex_port=443),
     ["hpc_systems.c1.unicorex_port: must be at least 1024"], None, []),
    ("managed-not-bool", lambda i: _c1(i)["slurm"].update(managed="yes"),
     ["hpc_systems.c1.slurm.managed: must be a boolean"], None, []),
    ("controller-missing", lambda i: _c1(i)["slurm"].pop("controller"),
     ["hpc_systems.c1.slurm.controller: required key is missing", "required when managed is true"],
     "validate.yml", []),
    ("controller-foreign", lambda i: _c1(i)["slurm"].update(controller="c2-login"),
     ["hpc_systems.c1.slurm.controller: host 'c2-login' is in neither group"], "validate.yml", []),
    ("login-group-unknown", lambda i: _c1(i).update(login_group="c1_logins"),
     ["hpc_systems.c1.login_group: group 'c1_logins' is not in the inventory"], "validate.yml", []),
    ("compute-group-empty", _empty_compute_group,
     ["hpc_systems.c1.compute_group: group 'c1_compute' has no hosts"], None, []),
    ("required-group-missing", _drop_xuudb_group,
     ["groups.unicore_xuudb: required inventory group is missing"], "validate.yml", []),
    ("unicorex-host-unknown", lambda i: _c1(i).update(unicorex_host="unicorx"),
     ["hpc_systems.c1.unicorex_host: host 'unicorx' is not in the inventory"], None, []),
    ("unicorex-host-not-server", lambda i: _c1(i).update(unicorex_host="jupyter"),
     ["hpc_systems.c1.unicorex_host: host 'jupyter' is not in group 'unicore_servers'"], "validate.yml", []),
    ("unicorex-port-shared", lambda i: i["site"]["hpc_systems"]["c2"].update(unicorex_port=7777),
     ["hpc_systems.c2.unicorex_port: port 7777 on host 'unicore' is already used by the UNICORE/X of hpc_systems.c1"],
     "site.yml", ["--limit", "c1_login"]),
    ("unicorex-port-xuudb", lambda i: _c1(i).update(unicorex_port=34463),
     ["hpc_systems.c1.unicorex_port: port 34463 on host 'unicore' is the XUUDB port"], "validate.yml", []),
    ("partition-default-name", lambda i: _c1(i)["partitions"][0].update(name="Default"),
     ["hpc_systems.c1.partitions[0].name: 'Default' is reserved by Slurm"], "validate.yml", []),
    ("partition-name-invalid", lambda i: _c1(i)["partitions"][0].update(name="my batch"),
     ["hpc_systems.c1.partitions[0].name: 'my batch' is not a valid Slurm partition name"], None, []),
    ("partition-duplicate", lambda i: _c1(i)["partitions"].insert(1, {"name": "batch"}),
     ["hpc_systems.c1.partitions[1].name: partition 'batch' is defined twice"], "validate.yml", []),
    ("partition-two-defaults", lambda i: _c1(i)["partitions"].insert(1, {"name": "gpu", "default": True}),
     ["hpc_systems.c1.partitions[1].default: only one partition per system may be the default"], None, []),
    ("partition-foreign-node", lambda i: _c1(i)["partitions"][0].update(nodes=["c1-node1", "c2-login"]),
     ["hpc_systems.c1.partitions[0].nodes: host 'c2-login' is not in compute group 'c1_compute'"], "validate.yml", []),
    ("partition-too-many-nodes", lambda i: _c1(i)["partitions"][0].update(max_nodes=3),
     ["hpc_systems.c1.partitions[0].max_nodes: 3 is more than the 2 node(s)"], "validate.yml", []),
    ("partition-nodes-template", lambda i: _c1(i)["partitions"][0].update(nodes="{{ groups['c1_nodes'] }}"),
     ["hpc_systems.c1.partitions[0].nodes: cannot be resolved", "c1_nodes"], "validate.yml", []),
    ("host-in-two-systems", _share_node,
     ["hpc_systems.c2.compute_group: host 'c1-node2' is also in hpc_systems.c1"], "validate.yml", []),
    ("user-name-pattern", lambda i: i["site"]["hpc_users"][1].update(name="Bob Smith"),
     ["hpc_users[1].name:", "must be a lower-case letter or '_'"], None, []),
    ("user-duplicate", _duplicate_user,
     ["hpc_users[2].name: user 'alice' is already defined at hpc_users[0]"], None, []),
    ("user-unknown-system", lambda i: i["site"]["hpc_users"][1]["systems"].update(c3={"xlogin": "bob"}),
     ["hpc_users[1].systems.c3: there is no HPC system 'c3' in hpc_systems"], "validate.yml", []),
    ("user-uid-missing", lambda i: i["site"]["hpc_users"][1]["systems"]["c1"].pop("uid"),
     ["hpc_users[1].systems.c1.uid: required because hpc_systems.c1.accounts_managed is true"], "validate.yml", []),
    ("user-uid-too-low", lambda i: i["site"]["hpc_users"][1]["systems"]["c1"].update(uid=999),
     ["hpc_users[1].systems.c1.uid: must be at least 1000, found 999"], None, []),
    ("user-uid-shared", lambda i: i["site"]["hpc_users"][1]["systems"]["c1"].update(uid=20001),
     ["hpc_users[1].systems.c1.uid: uid 20001 on c1 is already the uid of xlogin 'alice'"], "validate.yml", []),
    ("xlogin-two-uids", _xlogin_two_uids,
     ["hpc_users[2].systems.c1.uid: xlogin 'alice' on c1 has uid 20003 here but uid 20001"], None, []),
    ("jupyter-route-unknown", lambda i: _c1(i).update(jupyter_route="tunnel"),
     ["hpc_systems.c1.jupyter_route:", "tunnel"], None, []),
    ("jupyter-env-prefix-relative", lambda i: _c1(i).update(jupyter_env_prefix="opt/jupyter"),
     ["hpc_systems.c1.jupyter_env_prefix:"], None, []),
    ("jupyter-hub-api-url-scheme", lambda i: _c1(i).update(jupyter_hub_api_url="hub.ihpc.test/hub/api"),
     ["hpc_systems.c1.jupyter_hub_api_url:"], None, []),
    ("jupyter-idle-timeout-negative", lambda i: _c1(i).update(jupyter_idle_timeout_minutes=-5),
     ["hpc_systems.c1.jupyter_idle_timeout_minutes:"], None, []),
    ("password-not-shown", lambda i: i["site"]["hpc_users"][0].update(unity_password=123456789),
     ["hpc_users[0].unity_password: must be a string", "<hidden>"], "validate.yml", []),
    # Near misses of the data model's keys and of role variables (the optional hpc_users would
    # otherwise be dropped silently); the message names where the misspelt name is set.
    ("optional-key-misspelt", _rename_top_key("hpc_users", "hpc_user"),
     ["hpc_user: unknown variable (a typo?); did you mean 'hpc_users'? (set for every host)"], "validate.yml", []),
    ("required-key-misspelt", _rename_top_key("hpc_systems", "hpc_systms"),
     ["hpc_systms: unknown variable (a typo?); did you mean 'hpc_systems'?",
      "hpc_systems: required key is missing"], "site.yml", []),
    ("role-variable-misspelt", _host_var("c1-login", "munge_keys_64", {}),
     ["munge_keys_64: unknown variable (a typo?); did you mean 'munge_keys_b64'? (set for host 'c1-login')"],
     "validate.yml", []),
    ("site-variable-misspelt", lambda i: i["site"].update(site_secret_dir="/tmp/x"),
     ["site_secret_dir: unknown variable (a typo?); did you mean 'site_secrets_dir'?"],
     "site.yml", ["--limit", "c1_login"]),
    # Users are never mapped to root, system or service accounts.
    ("xlogin-root", _map_to("root"),
     ["hpc_users[1].systems.c1.xlogin: 'root' is a system or service account"], "validate.yml", []),
    ("xlogin-role-service-user", _map_to("unicore"),
     ["hpc_users[1].systems.c1.xlogin: 'unicore' is a system or service account"], "validate.yml", []),
    ("xlogin-slurm", _map_to("slurm"),
     ["hpc_users[1].systems.c1.xlogin: 'slurm' is a system or service account"], None, []),
    ("xlogin-munge", _map_to("munge"),
     ["hpc_users[1].systems.c1.xlogin: 'munge' is a system or service account"], None, []),
    ("xlogin-hub", _map_to("jupyterhub"),
     ["hpc_users[1].systems.c1.xlogin: 'jupyterhub' is a system or service account"], None, []),
    ("xlogin-debian-system", _map_to("daemon"),
     ["hpc_users[1].systems.c1.xlogin: 'daemon' is a system or service account"], None, []),
    ("xlogin-system-uid", _map_to("svc", uid=999),
     ["hpc_users[1].systems.c1.uid: must be at least 1000, found 999"], None, []),
]


def _write_inventory(dest: Path, mutate=None) -> Path:
    shutil.copytree(MOLECULE_INVENTORY, dest, ignore=shutil.ignore_patterns("secrets"))
    inv = {
        "hosts": yaml.safe_load((dest / "hosts.yml").read_text()),
        "site": yaml.safe_load((dest / "group_vars" / "all" / "site.yml").read_text()),
    }
    inv["hosts"]["test_containers"]["vars"] = dict(UNUSABLE_HOST_VARS)
    # The copy lives elsewhere: point it at the site mirror the real test inventory uses.
    sources = dest / "group_vars" / "all" / "install_sources.yml"
    sources.write_text(sources.read_text().replace(
        "test_site_mirror: ", "test_site_mirror: %s\n# was: " % json.dumps(str(SITE_MIRROR)), 1))
    if mutate is not None:
        mutate(inv)
    (dest / "hosts.yml").write_text(yaml.safe_dump(inv["hosts"], sort_keys=False))
    (dest / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(inv["site"], sort_keys=False))
    return dest


def _fill_skeleton(dest: Path) -> Path:
    shutil.copytree(SKELETON, dest)
    for path in dest.rglob("*.yml"):
        text = path.read_text().replace("__SITE_NAME__", "newsite").replace("__SITE_DOMAIN__", "hpc.newsite.example")
        text = text.replace("__TSI_ARCHIVE_SHA256__", "61af86d8b11a0a1b7be67647683aea94d51beb5ffee8e0c9e1c0ac33dca0a72c")
        path.write_text(text)
    return dest


def _run(playbook: str, inventory: Path, extra=()):
    """ansible-playbook on the inventory; the result carries the run's counters as .recap."""
    # site.yml is at the top; the service playbooks are in playbooks/.
    path = REPO / playbook if (REPO / playbook).is_file() else REPO / "playbooks" / playbook
    return run_playbook("-i", inventory, path, *extra, timeout=120)


def _known_and_unrelated_variables(inv):
    """Variables that must pass: known ones, and names far from any known one."""
    inv["site"].update(slurm_verify_retries=5, site_rekey=False, vault_unity_password_jdoe="x",
                       hpc_users_notes="who asked for access", sizes=[1, 2])
    _host_var("c1-login", "munge_keys_b64", {})(inv)


def _half_filled_skeleton(dest: Path) -> Path:
    """The skeleton with only group_vars/all filled: hosts.yml keeps __SITE_DOMAIN__."""
    _fill_skeleton(dest)
    shutil.copy(SKELETON / "hosts.yml", dest / "hosts.yml")
    return dest


# (file, text, line of the error) for the YAML syntax error cases.
YAML_ERRORS = {
    "yaml-error-group-vars": ("group_vars/all/site.yml", "site:\n  name: x\n   domain: y\n", 3),
    # A hosts file that cannot be parsed must stop the run, not leave an inventory without hosts.
    "yaml-error-hosts": ("hosts.yml", "all:\n  children:\n    hub:\n     hosts: {a: }\n   x: [\n", 5),
}


def _broken_yaml(case):
    def make(tmp):
        dest = _write_inventory(tmp / case)
        name, text, _line = YAML_ERRORS[case]
        (dest / name).write_text(text)
        return dest
    return make


GOOD_CASES = {
    "molecule": lambda tmp: _write_inventory(tmp / "molecule"),
    "example": lambda tmp: EXAMPLE_INVENTORY,
    "skeleton-filled": lambda tmp: _fill_skeleton(tmp / "skeleton"),
    "skeleton-unfilled": lambda tmp: SKELETON,
    "known-and-unrelated-variables": lambda tmp: _write_inventory(tmp / "known", _known_and_unrelated_variables),
    "skeleton-half-filled": lambda tmp: _half_filled_skeleton(tmp / "half-filled"),
    **{case: _broken_yaml(case) for case in YAML_ERRORS},
}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Run ansible-playbook for every selected case at once; return id -> CompletedProcess."""
    wanted = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "case" in callspec.params and item.module is request.module:
            wanted.add(callspec.params["case"])
    tmp = tmp_path_factory.mktemp("inventories")
    jobs = {}
    for case_id, mutate, _texts, playbook, extra in BAD_CASES:
        if case_id in wanted and playbook is not None:
            jobs[case_id] = (playbook, _write_inventory(tmp / case_id, mutate), extra)
    for case_id, make in GOOD_CASES.items():
        if case_id in wanted:
            jobs[case_id] = ("validate.yml", make(tmp), [])
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        futures = {case_id: pool.submit(_run, *job) for case_id, job in jobs.items()}
        return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("case", [c[0] for c in BAD_CASES if c[3] is not None])
def test_bad_inventory_fails_before_any_host(case, runs):
    _case_id, _mutate, texts, _playbook, extra = next(c for c in BAD_CASES if c[0] == case)
    result = runs[case]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "The site inventory is invalid" in output, output
    for text in texts:
        assert text in output, "%r missing in:\n%s" % (text, output)
    assert "UNREACHABLE" not in output, output
    hosts = result.recap
    # --limit leaves localhost out: the check then runs once on a limited host, without a connection.
    allowed = {"localhost"} if "--limit" not in extra else {"c1-login"}
    assert hosts and set(hosts) <= allowed, hosts
    for counters in hosts.values():
        assert counters["unreachable"] == 0 and counters["changed"] == 0, hosts


@pytest.mark.parametrize("case", ["molecule", "example", "skeleton-filled", "known-and-unrelated-variables"])
def test_good_inventory_validates(case, runs):
    result = runs[case]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "The site inventory is invalid" not in output
    assert "UNREACHABLE" not in output, output


@pytest.mark.parametrize("case", ["skeleton-unfilled"])
def test_unfilled_skeleton_names_the_placeholders(case, runs):
    output = runs[case].stdout + runs[case].stderr
    assert runs[case].returncode != 0
    for text in ("site.name:", "site.domain:", "site.public_hub_url:"):
        assert text in output, output


@pytest.mark.parametrize("case", ["skeleton-half-filled"])
def test_half_filled_skeleton_names_the_placeholders_left(case, runs):
    """Only group_vars were filled: the placeholder left in hosts.yml is refused, with file and key."""
    output = runs[case].stdout + runs[case].stderr
    assert runs[case].returncode != 0, output
    assert "The site inventory is invalid (1 problem)" in output, output
    assert "hosts.yml all.vars.ansible_host: still holds the skeleton placeholder __SITE_DOMAIN__" in output, output
    assert "UNREACHABLE" not in output, output


@pytest.mark.parametrize("case", sorted(YAML_ERRORS))
def test_yaml_error_names_file_and_line(case, runs):
    """A YAML syntax error stops the run with the file and the line, before any host is touched."""
    name, _text, line = YAML_ERRORS[case]
    result = runs[case]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert re.search(r"%s:%d:\d+" % (re.escape(name), line), output), "no %s:%d in:\n%s" % (name, line, output)
    assert "UNREACHABLE" not in output, output
    if name == "hosts.yml":
        assert "Completely failed to parse inventory source" in output and "PLAY [" not in output, output
    for counters in result.recap.values():
        assert counters["changed"] == 0 and counters["unreachable"] == 0, output


def _groups(tree):
    """Ansible's `groups` for a YAML inventory without host ranges: group -> hosts, children included."""
    groups = {}

    def walk(node):
        members = []
        for name, group in (node or {}).items():
            group = group or {}
            hosts = list(group.get("hosts") or {}) + walk(group.get("children"))
            groups[name] = list(dict.fromkeys(groups.get(name, []) + hosts))
            members += hosts
        return members

    groups["all"] = list(dict.fromkeys(walk(tree)))
    return groups


def _raw_schema_errors(data):
    """Schema errors in the form ansible.utils.jsonschema hands to the playbook."""
    raw = []
    for err in jsonschema.Draft202012Validator(SCHEMA).iter_errors(data):
        path = "$" + "".join("[%d]" % p if isinstance(p, int) else "." + p for p in err.absolute_path)
        raw.append({"message": err.message, "json_path": path, "validator": err.validator,
                    "expected": err.validator_value, "found": err.instance, "relative_schema": err.schema,
                    "schema_path": ".".join(str(p) for p in err.relative_schema_path)})
    return raw


@pytest.mark.parametrize("case", [c[0] for c in BAD_CASES if c[3] is None])
def test_bad_inventory_in_process(case, tmp_path):
    _case_id, mutate, texts, _playbook, _extra = next(c for c in BAD_CASES if c[0] == case)
    inventory = _write_inventory(tmp_path / case, mutate)
    data = yaml.safe_load((inventory / "group_vars" / "all" / "site.yml").read_text())
    groups = _groups(yaml.safe_load((inventory / "hosts.yml").read_text()))
    problems = site_model.site_model_schema_messages(_raw_schema_errors(data))
    problems += site_model.site_model_errors(data, groups, reserved_accounts=_reserved_accounts())
    report = site_model.site_model_report(problems)
    assert report.startswith("The site inventory is invalid")
    for text in texts:
        assert text in report, "%r missing in:\n%s" % (text, report)


def _role_defaults_texts():
    return [path.read_text() for path in sorted((REPO / "roles").glob("*/defaults/main.yml"))]


def _reserved_accounts():
    """The accounts playbooks/validate.yml refuses: its lists plus the roles' service users."""
    settings = yaml.safe_load((REPO / "playbooks" / "vars" / "site_model.yml").read_text())
    return (settings["site_model_system_accounts"] + settings["site_model_service_accounts"]
            + site_model.site_model_service_accounts(_role_defaults_texts()))


# --- the JSON schema alone -----------------------------------------------------------------


def _molecule_data():
    """site, hpc_systems and hpc_users of the molecule inventory (a fresh copy each time)."""
    return yaml.safe_load((MOLECULE_INVENTORY / "group_vars" / "all" / "site.yml").read_text())


def test_schema_is_valid_and_accepts_molecule_data():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(_molecule_data()))
    assert errors == []


def test_schema_unmanaged_slurm_needs_no_controller():
    data = _molecule_data()
    data["hpc_systems"]["c1"]["slurm"] = {"managed": False}
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data)) == []


# --- filter plugin unit tests --------------------------------------------------------------

GROUPS = {
    "all": ["jupyter", "idm", "unicore", "c1-login", "c1-node1", "c1-node2", "c2-login"],
    "hub": ["jupyter"], "unity": ["idm"], "unicore_gateway": ["unicore"], "unicore_xuudb": ["unicore"],
    "unicore_servers": ["unicore"], "c1_login": ["c1-login"], "c1_compute": ["c1-node1", "c1-node2"],
    "c2_login": ["c2-login"], "c2_compute": ["c2-login"],
}


def _errors(data, groups=None, **kwargs):
    return site_model.site_model_errors(data, GROUPS if groups is None else groups, **kwargs)


def test_filter_accepts_molecule_data():
    # c2 uses one host as login and compute node: that is not "a host in two systems".
    assert _errors(_molecule_data()) == []
    assert _groups(yaml.safe_load((MOLECULE_INVENTORY / "hosts.yml").read_text())) == dict(
        GROUPS, test_containers=GROUPS["all"])


def test_filter_survives_malformed_input():
    assert isinstance(_errors({"hpc_systems": "x", "hpc_users": {"a": 1}}), list)
    assert isinstance(_errors({"hpc_systems": {"c1": {"slurm": [], "partitions": [1, None]}},
                               "hpc_users": [None, {"systems": []}]}), list)
    assert isinstance(_errors(None, None), list)


def test_filter_gateway_port_only_counts_on_the_gateway_host():
    data = _molecule_data()
    data["hpc_systems"]["c1"]["unicorex_port"] = 8080
    assert any("is the UNICORE Gateway port" in e for e in _errors(data))
    groups = dict(GROUPS, unicore_gateway=["jupyter"])
    assert not any("Gateway port" in e for e in _errors(data, groups))
    # The port is a parameter: a site that moves the Gateway frees 8080.
    assert not any("Gateway port" in e for e in _errors(data, gateway_port=8443))


def test_filter_gid_consistency_and_shared_xlogin():
    data = _molecule_data()
    data["hpc_users"].append({"name": "alice2", "systems": {"c1": {"xlogin": "alice", "uid": 20001}}})
    assert _errors(data) == []  # two identities may map to one account
    data["hpc_users"][0]["systems"]["c1"]["gid"] = 100
    data["hpc_users"][2]["systems"]["c1"]["gid"] = 101
    assert _errors(data) == [
        "hpc_users[2].systems.c1.gid: xlogin 'alice' on c1 has gid 101 here but gid 100 at hpc_users[0].systems.c1"]


def test_filter_many_hosts_make_one_message():
    data = _molecule_data()
    groups = dict(GROUPS, c2_compute=["c2-login", "c1-node1", "c1-node2"])
    errors = [e for e in _errors(data, groups) if "a host serves one HPC system" in e]
    assert errors == ["hpc_systems.c2.compute_group: hosts 'c1-node1', 'c1-node2' are also in hpc_systems.c1 "
                      "(group 'c2_compute'); a host serves one HPC system"]


def test_filter_required_groups_parameter():
    assert _errors(_molecule_data(), dict(GROUPS, hub=[])) == [
        "groups.hub: required inventory group is missing or has no hosts"]
    assert _errors(_molecule_data(), dict(GROUPS, hub=[]), required_groups=[]) == []


def test_schema_messages_format():
    data = _molecule_data()
    data["hpc_systems"]["c1"]["slurm"] = {"managed": True, "contoller": "c1-login"}
    data["hpc_users"][0]["unity_password"] = ["secret"]
    messages = site_model.site_model_schema_messages(_raw_schema_errors(data) + ["engine exploded"])
    assert "hpc_systems.c1.slurm.contoller: unknown key (a typo?); allowed keys here: controller, managed, " \
           "node_cpus, node_real_memory_mb" in messages
    assert any(m.startswith("hpc_systems.c1.slurm.controller: required key is missing") for m in messages)
    assert "hpc_users[0].unity_password: must be a string, found a list" in messages
    assert not any("secret" in m for m in messages)
    assert "schema validation could not run: engine exploded" in messages


def test_report_is_sorted_and_counted():
    report = site_model.site_model_report(["site.name: b", "hpc_systems.c1: a", "site.name: b"])
    assert report.splitlines() == [
        "The site inventory is invalid (2 problems); no host was touched. See docs/inventory.md.",
        "  - hpc_systems.c1: a",
        "  - site.name: b",
    ]


def test_resolve_reports_failing_values_with_their_path():
    class Exploding(dict):
        def __getitem__(self, key):
            if key == "nodes":
                raise KeyError("no group c1_nodes")
            return dict.__getitem__(self, key)

    data = {"hpc_systems": {"c1": {"partitions": [Exploding(name="batch", nodes="x")]}}}
    result = site_model.site_model_resolve(data)
    assert result["data"] == {"hpc_systems": {"c1": {"partitions": [{"name": "batch"}]}}}
    assert result["errors"] == ["hpc_systems.c1.partitions[0].nodes: cannot be resolved: 'no group c1_nodes'"]


# --- near misses, service accounts, placeholders ----------------------------------------------


def test_role_variables_and_service_accounts_come_from_the_role_defaults():
    texts = _role_defaults_texts()
    names = site_model.site_model_role_variables(texts)
    assert {"munge_keys_b64", "slurm_config", "site_pki_mode", "hpc_accounts_shell"} <= set(names)
    assert "unicore" in site_model.site_model_service_accounts(texts)
    assert site_model.site_model_role_variables(["not: [valid", "", "- a list"]) == []


def test_unknown_variables_only_near_misses():
    known = ["site", "hpc_systems", "hpc_users", "site_secrets_dir", "slurm_config", "munge_keys_b64"]
    names = ["hpc_users", "hpc_user", "HPC-Users", "hpc_users_extra", "sites", "size", "vault_secret",
             "ansible_host", "inventory_hostname", "_private", "slurm_conifg", "munge_keys_64"]
    messages = site_model.site_model_unknown_variables({"a": names, "b": ["hpc_user", "sites"], "c": []}, known)
    flagged = {m.split(":", 1)[0]: m for m in messages}
    assert sorted(flagged) == ["HPC-Users", "hpc_user", "munge_keys_64", "sites", "slurm_conifg"], messages
    assert flagged["hpc_user"].endswith("did you mean 'hpc_users'? (set for hosts 'a', 'b')")
    assert flagged["munge_keys_64"].endswith("did you mean 'munge_keys_b64'? (set for host 'a')")
    assert flagged["sites"].endswith("did you mean 'site'? (set for hosts 'a', 'b')")
    every = site_model.site_model_unknown_variables({"a": ["hpc_user"]}, known)
    assert every == ["hpc_user: unknown variable (a typo?); did you mean 'hpc_users'? (set for every host)"]


def test_placeholders_in_values_and_keys_but_not_comments_or_secrets(tmp_path):
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "hosts.yml").write_text(
        "# replace __SITE_DOMAIN__ below\nall:\n  hosts:\n    __LOGIN_HOST__:\n  vars:\n"
        "    ansible_host: 'x.__SITE_DOMAIN__'\n    ok: done\n")
    (tmp_path / "group_vars" / "all" / "site.yml").write_text(
        "site:\n  names: [a, __SITE_NAME__]\npw: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n")
    (tmp_path / "host_vars" / "h1").write_text("note: __TODO__\n")
    (tmp_path / "secrets" / "x.yml").write_text("a: __SECRET__\n")
    (tmp_path / "broken.yml").write_text("a: [\n")
    messages = site_model.site_model_placeholders([str(tmp_path)], ["^secrets$"])
    assert sorted(messages) == [
        "group_vars/all/site.yml site.names[1]: still holds the skeleton placeholder __SITE_NAME__; "
        "replace it with the site's value",
        "host_vars/h1 note: still holds the skeleton placeholder __TODO__; replace it with the site's value",
        "hosts.yml all.hosts.__LOGIN_HOST__: still holds the skeleton placeholder __LOGIN_HOST__; "
        "replace it with the site's value",
        "hosts.yml all.vars.ansible_host: still holds the skeleton placeholder __SITE_DOMAIN__; "
        "replace it with the site's value",
    ]
    # An inventory given as a file: its directory's group_vars are read as well.
    assert len(site_model.site_model_placeholders([str(tmp_path / "hosts.yml")], [])) == 4
