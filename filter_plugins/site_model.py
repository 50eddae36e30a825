# -*- coding: utf-8 -*-
"""Checks of the site data model that a JSON schema cannot express.

playbooks/validate.yml runs the JSON schema (schemas/site.schema.json) through
ansible.utils.validate and then these filters, and fails once with every problem found.
Both filters return plain lists of "key.path: rule" strings so that they can be unit-tested
without Ansible (tests/test_inventory_validation.py) and joined into one message.

site_model_resolve(data)
    Resolves the templates in the data model value by value: {'data': ..., 'errors': [...]}.
site_model_errors(data, groups, gateway_port=8080, xuudb_port=34463, required_groups=...)
    Cross-checks of {site, hpc_systems, hpc_users} against the inventory groups.
site_model_schema_messages(errors)
    Turns the error list of ansible.utils.validate (engine ansible.utils.jsonschema)
    into the same "key.path: rule" form.
site_model_report(problems)
    The single failure message: a header and the problems sorted by key path.
site_model_role_variables(defaults_texts)
    The public variables of the roles (keys of their defaults/main.yml files).
site_model_service_accounts(defaults_texts)
    The service users that the roles' defaults name (*_user keys).
site_model_unknown_variables(vars_by_host, known)
    Inventory variables whose names are near misses of known ones ("did you mean").
site_model_placeholders(sources, ignore_patterns)
    Skeleton placeholders (__NAME__) left anywhere in the inventory files.

Every check tolerates malformed input (the schema reports that) so that one run lists all
problems instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping

import yaml

# Slurm accepts these partition names in slurm.conf and on the sbatch command line.
SLURM_PARTITION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Groups that every site inventory needs: the services the bundle always deploys.
DEFAULT_REQUIRED_GROUPS = ("hub", "unity", "unicore_gateway", "unicore_xuudb", "unicore_servers")

_REQUIRED_RE = re.compile(r"^'(.+)' is a required property$")

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "null": "null",
}


def _claim(table, key, value, where):
    """Record that key has value (first seen at where); return the earlier (value, where) when it differs."""
    earlier = table.setdefault(key, (value, where))
    return earlier if earlier[0] != value else None


def _is_int(value):
    # YAML true/false are bools, which Python also counts as ints.
    return isinstance(value, int) and not isinstance(value, bool)


def _as_mapping(value):
    return value if isinstance(value, Mapping) else {}


def _as_list(value):
    return value if isinstance(value, list) else []


def _join(path, key):
    if isinstance(key, int):
        return "%s[%d]" % (path, key)
    return "%s.%s" % (path, key) if path else str(key)


def _hosts_phrase(hosts, verb="is", verb_plural="are", limit=5):
    """"host 'a' is" or "hosts 'a', 'b' and 3 more are", for messages about many hosts."""
    if len(hosts) == 1:
        return "host '%s' %s" % (hosts[0], verb)
    shown = ", ".join("'%s'" % h for h in hosts[:limit])
    more = " and %d more" % (len(hosts) - limit) if len(hosts) > limit else ""
    return "hosts %s%s %s" % (shown, more, verb_plural)


def _group_hosts(groups, name):
    """Hosts of an inventory group, or None when the group does not exist."""
    if not isinstance(name, str) or name not in groups:
        return None
    return list(groups[name] or [])


def _check_groups(groups, required_groups):
    errors = []
    for name in required_groups:
        if not groups.get(name):
            errors.append("groups.%s: required inventory group is missing or has no hosts" % name)
    return errors


def _check_system(sname, system, groups, all_hosts):
    """Groups, controller and partitions of one HPC system; returns (errors, members)."""
    errors = []
    path = "hpc_systems.%s" % sname
    members = {}  # host -> key of the group it came from, for messages
    compute_hosts = None
    for key in ("login_group", "compute_group"):
        gname = system.get(key)
        if not isinstance(gname, str):
            continue
        hosts = _group_hosts(groups, gname)
        if hosts is None:
            errors.append("%s.%s: group '%s' is not in the inventory" % (path, key, gname))
            continue
        if not hosts:
            errors.append("%s.%s: group '%s' has no hosts" % (path, key, gname))
        for host in hosts:
            members.setdefault(host, key)
        if key == "compute_group":
            compute_hosts = set(hosts)

    slurm = _as_mapping(system.get("slurm"))
    managed = slurm.get("managed") is True
    controller = slurm.get("controller")
    if managed and isinstance(controller, str):
        if controller not in all_hosts:
            errors.append("%s.slurm.controller: host '%s' is not in the inventory" % (path, controller))
        elif controller not in members:
            errors.append(
                "%s.slurm.controller: host '%s' is in neither group '%s' nor group '%s' of this system"
                % (path, controller, system.get("login_group"), system.get("compute_group"))
            )

    seen = {}
    defaults = []
    for index, part in enumerate(_as_list(system.get("partitions"))):
        if not isinstance(part, Mapping):
            continue
        ppath = "%s.partitions[%d]" % (path, index)
        name = part.get("name")
        if isinstance(name, str):
            if not SLURM_PARTITION_RE.fullmatch(name):
                errors.append(
                    "%s.name: '%s' is not a valid Slurm partition name (1-64 letters, digits, '_', '.' or '-', "
                    "starting with a letter or digit)" % (ppath, name)
                )
            elif name.lower() == "default":
                errors.append(
                    "%s.name: '%s' is reserved by Slurm (PartitionName=DEFAULT sets defaults for all partitions)"
                    % (ppath, name)
                )
            if name in seen:
                errors.append(
                    "%s.name: partition '%s' is defined twice in this system (also %s.partitions[%d])"
                    % (ppath, name, path, seen[name])
                )
            else:
                seen[name] = index
        if part.get("default") is True:
            defaults.append(index)
        nodes = part.get("nodes")
        if isinstance(nodes, list):
            node_count = len(set(n for n in nodes if isinstance(n, str)))
            if compute_hosts is not None:
                strays = [n for n in nodes if isinstance(n, str) and n not in compute_hosts]
                if strays:
                    errors.append(
                        "%s.nodes: %s not in compute group '%s' of this system"
                        % (ppath, _hosts_phrase(strays), system.get("compute_group"))
                    )
        else:
            node_count = len(compute_hosts) if compute_hosts is not None else 0
        max_nodes = part.get("max_nodes")
        # Only a managed Slurm is fully described by the inventory; a centre's own Slurm may
        # have more nodes than the hosts the bundle prepares.
        if managed and _is_int(max_nodes) and node_count and max_nodes > node_count:
            errors.append(
                "%s.max_nodes: %d is more than the %d node(s) of this partition" % (ppath, max_nodes, node_count)
            )
    if len(defaults) > 1:
        for index in defaults[1:]:
            errors.append(
                "%s.partitions[%d].default: only one partition per system may be the default (also %s.partitions[%d])"
                % (path, index, path, defaults[0])
            )
    return errors, members


def _check_unicorex(sname, system, groups, all_hosts, used_ports, gateway_port, xuudb_port):
    errors = []
    path = "hpc_systems.%s" % sname
    host = system.get("unicorex_host")
    if not isinstance(host, str):
        return errors
    if host not in all_hosts:
        errors.append("%s.unicorex_host: host '%s' is not in the inventory" % (path, host))
        return errors
    if host not in (groups.get("unicore_servers") or []):
        errors.append("%s.unicorex_host: host '%s' is not in group 'unicore_servers'" % (path, host))
    port = system.get("unicorex_port")
    if not _is_int(port):
        return errors
    other = used_ports.get((host, port))
    if other is not None:
        errors.append(
            "%s.unicorex_port: port %d on host '%s' is already used by the UNICORE/X of hpc_systems.%s"
            % (path, port, host, other)
        )
    else:
        used_ports[(host, port)] = sname
    for group, service, service_port in (
        ("unicore_gateway", "UNICORE Gateway", gateway_port),
        ("unicore_xuudb", "XUUDB", xuudb_port),
    ):
        if host in (groups.get(group) or []) and _is_int(service_port) and port == service_port:
            errors.append(
                "%s.unicorex_port: port %d on host '%s' is the %s port" % (path, port, host, service)
            )
    return errors


def _check_users(users, systems, reserved_accounts=()):
    errors = []
    reserved = set(reserved_accounts or ())
    names = {}
    uid_of = {}  # (system, xlogin) -> (uid, path)
    xlogin_of = {}  # (system, uid) -> (xlogin, path)
    gid_of = {}  # (system, xlogin) -> (gid, path)
    known = ", ".join(sorted(systems)) or "none"
    for index, user in enumerate(users):
        if not isinstance(user, Mapping):
            continue
        upath = "hpc_users[%d]" % index
        name = user.get("name")
        if isinstance(name, str):
            if name in names:
                errors.append("%s.name: user '%s' is already defined at hpc_users[%d]" % (upath, name, names[name]))
            else:
                names[name] = index
        for sname, account in _as_mapping(user.get("systems")).items():
            apath = "%s.systems.%s" % (upath, sname)
            if sname not in systems:
                errors.append("%s: there is no HPC system '%s' in hpc_systems (known: %s)" % (apath, sname, known))
                continue
            if not isinstance(account, Mapping):
                continue
            system = _as_mapping(systems[sname])
            if system.get("accounts_managed") is True and "uid" not in account:
                errors.append(
                    "%s.uid: required because hpc_systems.%s.accounts_managed is true (the bundle creates the account)"
                    % (apath, sname)
                )
            xlogin = account.get("xlogin")
            if not isinstance(xlogin, str):
                continue
            if xlogin in reserved:
                errors.append(
                    "%s.xlogin: '%s' is a system or service account (root, Debian's system users and the "
                    "bundle's service users are never mapped); map the user to their own account" % (apath, xlogin)
                )
            uid = account.get("uid")
            if _is_int(uid):
                clash = _claim(uid_of, (sname, xlogin), uid, apath)
                if clash:
                    errors.append(
                        "%s.uid: xlogin '%s' on %s has uid %d here but uid %d at %s" % ((apath, xlogin, sname, uid) + clash)
                    )
                clash = _claim(xlogin_of, (sname, uid), xlogin, apath)
                if clash:
                    errors.append(
                        "%s.uid: uid %d on %s is already the uid of xlogin '%s' (%s)" % ((apath, uid, sname) + clash)
                    )
            gid = account.get("gid")
            if _is_int(gid):
                clash = _claim(gid_of, (sname, xlogin), gid, apath)
                if clash:
                    errors.append(
                        "%s.gid: xlogin '%s' on %s has gid %d here but gid %d at %s" % ((apath, xlogin, sname, gid) + clash)
                    )
    return errors


def site_model_errors(data, groups, gateway_port=8080, xuudb_port=34463, required_groups=DEFAULT_REQUIRED_GROUPS,
                      reserved_accounts=()):
    """Cross-check {site, hpc_systems, hpc_users} against the inventory; return error strings.

    groups is Ansible's `groups` (group name -> list of hosts). gateway_port and xuudb_port
    are the UNICORE Gateway and XUUDB ports, which a UNICORE/X on the same host must avoid.
    reserved_accounts are account names that no user may be mapped to (root, system and
    service accounts).
    """
    data = _as_mapping(data)
    groups = _as_mapping(groups)
    all_hosts = set(groups.get("all") or [])
    for hosts in groups.values():
        all_hosts.update(hosts or [])
    systems = _as_mapping(data.get("hpc_systems"))
    users = _as_list(data.get("hpc_users"))

    errors = _check_groups(groups, list(required_groups or []))
    owner = {}  # host -> system it belongs to
    used_ports = {}  # (host, port) -> system
    for sname, system in systems.items():
        if not isinstance(system, Mapping):
            continue
        system_errors, members = _check_system(sname, system, groups, all_hosts)
        errors.extend(system_errors)
        errors.extend(_check_unicorex(sname, system, groups, all_hosts, used_ports, gateway_port, xuudb_port))
        shared = {}  # (group key, other system) -> hosts
        for host, key in members.items():
            other = owner.setdefault(host, sname)
            if other != sname:
                shared.setdefault((key, other), []).append(host)
        for (key, other), hosts in shared.items():
            errors.append(
                "hpc_systems.%s.%s: %s also in hpc_systems.%s (group '%s'); a host serves one HPC system"
                % (sname, key, _hosts_phrase(hosts), other, system.get(key))
            )
    errors.extend(_check_users(users, systems, reserved_accounts))
    return errors


def site_model_resolve(data):
    """Resolve the templates in the data model one value at a time.

    Returns {'data': plain data, 'errors': [...]}: a value whose template fails (a typo in
    "{{ groups['...'] }}", an undefined vault variable) is left out and reported with its key
    path, instead of failing the whole check with an error that names no key.
    """
    errors = []

    def walk(value, path):
        if isinstance(value, Mapping):
            out = {}
            for key in list(value.keys()):
                try:
                    item = value[key]
                except Exception as exc:  # pylint: disable=broad-except  # any templating error
                    errors.append("%s: cannot be resolved: %s" % (_join(path, key), _error_text(_join(path, key), exc)))
                    continue
                out[key if _is_int(key) else str(key)] = walk(item, _join(path, key))
            return out
        if isinstance(value, (list, tuple)):
            out = []
            for index in range(len(value)):
                try:
                    item = value[index]
                except Exception as exc:  # pylint: disable=broad-except  # any templating error
                    errors.append("%s: cannot be resolved: %s" % (_join(path, index), _error_text(_join(path, index), exc)))
                    continue
                out.append(walk(item, _join(path, index)))
            return out
        if isinstance(value, bool) or value is None:
            return value
        for plain in (int, float, str):
            if isinstance(value, plain):
                return plain(value)
        return value

    resolved = walk(_as_mapping(data), "")
    return {"data": resolved, "errors": errors}


def _error_text(path, exc):
    if "password" in path:
        return type(exc).__name__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _shown(path, value):
    """A short rendering of an offending value; secrets are never shown."""
    if "password" in path:
        return "<hidden>"
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _found_type(value):
    if isinstance(value, bool):
        return "a boolean"
    if _is_int(value):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null (an empty value)"
    return type(value).__name__


def _plural(count, singular, plural):
    return "%s %s" % (count, singular if count == 1 else plural)


def _schema_message(err):
    """Rewrite one jsonschema error (a dict from ansible.utils.jsonschema) as 'path: rule' strings."""
    json_path = err.get("json_path") or "$"
    path = json_path[2:] if json_path.startswith("$.") else json_path[1:]
    validator = err.get("validator")
    expected = err.get("expected")
    found = err.get("found")
    schema = _as_mapping(err.get("relative_schema"))
    schema_path = str(err.get("schema_path") or "")
    description = schema.get("description")
    where = path or "(top level)"

    if "propertyNames" in schema_path.split("."):
        rule = "must be %s" % description if description else "must match %s" % expected
        return ["%s: invalid name '%s': %s" % (_join(path, found), found, rule)]
    if validator == "required":
        match = _REQUIRED_RE.match(str(err.get("message", "")))
        missing = match.group(1) if match else None
        if missing is None:
            return ["%s: %s" % (where, err.get("message"))]
        text = "%s: required key is missing" % _join(path, missing)
        if "then" in schema_path.split(".") and description:
            text += " (%s)" % description
        return [text]
    if validator == "additionalProperties":
        allowed = sorted(_as_mapping(schema.get("properties")))
        extras = [key for key in _as_mapping(found) if key not in allowed]
        return [
            "%s: unknown key (a typo?); allowed keys here: %s" % (_join(path, key), ", ".join(allowed))
            for key in extras
        ] or ["%s: %s" % (where, err.get("message"))]
    if validator == "pattern":
        rule = "must be %s" % description if description else "must match the pattern %s" % expected
        return ["%s: %s %s" % (where, _shown(path, found), rule)]
    if validator == "type":
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in (expected if isinstance(expected, list) else [expected]))
        shown = "" if isinstance(found, (Mapping, list)) or found is None else " " + _shown(path, found)
        return ["%s: must be %s, found %s%s" % (where, wanted, _found_type(found), shown)]
    if validator == "minimum":
        return ["%s: must be at least %s, found %s" % (where, expected, _shown(path, found))]
    if validator == "maximum":
        return ["%s: must be at most %s, found %s" % (where, expected, _shown(path, found))]
    if validator == "minItems":
        return ["%s: must list at least %s" % (where, _plural(expected, "entry", "entries"))]
    if validator == "minProperties":
        return ["%s: must have at least %s" % (where, _plural(expected, "entry", "entries"))]
    if validator == "minLength":
        if expected == 1:
            return ["%s: must not be empty" % where]
        return ["%s: must be at least %s long" % (where, _plural(expected, "character", "characters"))]
    if validator == "maxLength":
        return ["%s: must be at most %s long" % (where, _plural(expected, "character", "characters"))]
    if validator == "uniqueItems":
        return ["%s: entries must be unique" % where]
    message = err.get("message", "is invalid")
    if "password" in path:
        message = "is invalid (%s)" % validator
    return ["%s: %s" % (where, message)]


def site_model_schema_messages(errors):
    """Format the result of ansible.utils.validate (jsonschema engine) as 'path: rule' strings."""
    messages = []
    for err in errors or []:
        if isinstance(err, Mapping):
            messages.extend(_schema_message(err))
        else:
            # The engine reports a broken schema or unusable data as a plain string.
            messages.append("schema validation could not run: %s" % err)
    return messages


def site_model_report(problems):
    """One message for the fail task: a header and the problems, sorted by key path."""
    # Sorted by key path (the text before ': '), so that problems of one key stand together.
    lines = sorted(set(str(p) for p in problems or []), key=lambda line: (line.split(": ", 1)[0], line))
    header = "The site inventory is invalid (%s); no host was touched. See docs/inventory.md." % _plural(
        len(lines), "problem", "problems"
    )
    return "\n".join([header] + ["  - " + line for line in lines])


# --- names of variables ---------------------------------------------------------------------

# The data model's own top-level keys.
DATA_MODEL_KEYS = ("site", "hpc_systems", "hpc_users")

# Names Ansible itself defines for every host; never compared.
_ANSIBLE_NAMES = frozenset((
    "environment", "group_names", "groups", "hostvars", "inventory_dir", "inventory_file",
    "inventory_hostname", "inventory_hostname_short", "omit", "play_hosts", "playbook_dir",
    "role_name", "role_names", "role_path",
))

# Similarity (difflib ratio) from which an unknown name counts as a misspelling of a known one:
# catches a dropped or doubled letter or an 's' too few or too many ('hpc_user', 'munge_keys_64')
# and leaves unrelated names alone ('hpc_users_extra' is 0.75 from 'hpc_users').
NEAR_MISS_CUTOFF = 0.8


def _defaults_of(defaults_texts):
    """Parsed defaults/main.yml mappings (unparsable or empty files are skipped)."""
    out = []
    for text in defaults_texts or []:
        try:
            data = yaml.safe_load(str(text))
        except yaml.YAMLError:
            continue
        if isinstance(data, Mapping):
            out.append(data)
    return out


def site_model_role_variables(defaults_texts):
    """Public variables of the roles: the keys of the given defaults/main.yml texts, sorted."""
    names = set()
    for data in _defaults_of(defaults_texts):
        names.update(str(key) for key in data)
    return sorted(names)


def site_model_service_accounts(defaults_texts):
    """Service users that the roles' defaults name: plain values of keys ending in 'user'."""
    accounts = set()
    for data in _defaults_of(defaults_texts):
        for key, value in data.items():
            if str(key).endswith("user") and isinstance(value, str) and value and "{" not in value:
                accounts.add(value)
    return sorted(accounts)


def _normalised(name):
    return name.lower().replace("-", "_")


def site_model_unknown_variables(vars_by_host, known, cutoff=NEAR_MISS_CUTOFF):
    """Names set in the inventory that are near misses of a known variable.

    vars_by_host maps each inventory host to the names of its variables (hostvars keys: host
    and group vars, extra vars, Ansible's own names). known lists the variables the bundle
    reads (data model keys, role defaults, site-wide settings). A name that is known, or
    Ansible's own, or not close to any known name passes; the others are returned as
    "name: unknown variable (a typo?); did you mean 'known'? (set for ...)" messages.
    """
    known = sorted(set(str(k) for k in known or []))
    known_set = set(known)
    by_normalised = {_normalised(k): k for k in known}
    vars_by_host = _as_mapping(vars_by_host)
    hosts_of = {}
    for host, names in vars_by_host.items():
        for name in names or []:
            hosts_of.setdefault(str(name), []).append(str(host))
    all_hosts = len(vars_by_host)
    messages = []
    for name in sorted(hosts_of):
        if name in known_set or name in _ANSIBLE_NAMES or name.startswith(("ansible_", "_")):
            continue
        match = by_normalised.get(_normalised(name))
        if match is None:
            close = difflib.get_close_matches(name, known, n=1, cutoff=cutoff)
            if not close:
                continue
            match = close[0]
        hosts = sorted(hosts_of[name])
        where = "every host" if len(hosts) == all_hosts else _hosts_phrase(hosts, verb="", verb_plural="").strip()
        messages.append("%s: unknown variable (a typo?); did you mean '%s'? (set for %s)" % (name, match, where))
    return messages


# --- placeholders left from the skeleton ----------------------------------------------------

# templates/inventory marks what a new site must fill in as __UPPER_CASE__.
PLACEHOLDER_RE = re.compile(r"__[A-Z][A-Z0-9_]*__")
_VARS_DIRS = ("group_vars", "host_vars")
_YAML_EXTS = (".yml", ".yaml", ".json")


class _PermissiveLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader that reads Ansible's tags (!vault, !unsafe) as plain values."""


def _any_tag(loader, _suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_PermissiveLoader.add_multi_constructor("!", _any_tag)


def _inventory_files(sources, ignore_patterns):
    """(base dir, file) of every YAML file Ansible reads from the inventory sources."""
    patterns = [re.compile(p) for p in ignore_patterns or []]

    def ignored(name):
        return name.startswith(".") or name.endswith("~") or any(p.search(name) for p in patterns)

    found = []
    for source in sources or []:
        source = str(source)
        if os.path.isfile(source):
            base = os.path.dirname(source)
            found.append((base, source))
        elif os.path.isdir(source):
            base = source
            for name in sorted(os.listdir(base)):
                path = os.path.join(base, name)
                # An extensionless file may be YAML too (an INI one does not parse and is skipped).
                if os.path.isfile(path) and not ignored(name) and (name.endswith(_YAML_EXTS) or "." not in name):
                    found.append((base, path))
        else:
            continue
        for sub in _VARS_DIRS:
            top = os.path.join(base, sub)
            for root, dirs, files in os.walk(top):
                dirs[:] = sorted(d for d in dirs if not ignored(d))
                for name in sorted(files):
                    if not ignored(name) and (name.endswith(_YAML_EXTS) or "." not in name):
                        found.append((base, os.path.join(root, name)))
    return list(dict.fromkeys(found))


def site_model_placeholders(sources, ignore_patterns=()):
    """Skeleton placeholders (__NAME__) left in keys or values of the inventory files.

    sources are Ansible's inventory sources (ansible_inventory_sources); their YAML files and
    group_vars/host_vars trees are read (comments are not looked at). Returns
    "<file> <key path>: ..." messages.
    """
    messages = []
    for base, path in _inventory_files(sources, ignore_patterns):
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.load(handle, Loader=_PermissiveLoader)  # noqa: S506 - SafeLoader subclass
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            # Ansible itself reports a file it cannot read; a vaulted file is one string.
            continue
        shown = os.path.relpath(path, base)
        found = []

        def walk(value, where):
            if isinstance(value, Mapping):
                for key, item in value.items():
                    here = _join(where, key)
                    if isinstance(key, str) and PLACEHOLDER_RE.search(key):
                        found.append((here, PLACEHOLDER_RE.findall(key)))
                    walk(item, here)
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    walk(item, _join(where, index))
            elif isinstance(value, str) and PLACEHOLDER_RE.search(value):
                found.append((where or "(top level)", PLACEHOLDER_RE.findall(value)))

        walk(data, "")
        for where, names in found:
            messages.append(
                "%s %s: still holds the skeleton placeholder %s; replace it with the site's value"
                % (shown, where, ", ".join(sorted(set(names))))
            )
    return messages


class FilterModule:
    """Site data model checks (see docs/inventory.md)."""

    def filters(self):
        return {
            "site_model_resolve": site_model_resolve,
            "site_model_errors": site_model_errors,
            "site_model_schema_messages": site_model_schema_messages,
            "site_model_report": site_model_report,
            "site_model_role_variables": site_model_role_variables,
            "site_model_service_accounts": site_model_service_accounts,
            "site_model_unknown_variables": site_model_unknown_variables,
            "site_model_placeholders": site_model_placeholders,
        }
