# -*- coding: utf-8 -*-
"""Checks of the site data model that a JSON schema cannot express: its templates and its hosts.

playbooks/tasks/validate_site_model.yml resolves the data model with site_model_resolve, checks
the result against schemas/site.schema.json and then with site_model_errors; the other checks
of that task are in site_model_variables.py and site_model_placeholders.py, the failure message
in site_model_messages.py. Both filters return plain lists of "key.path: rule" strings so that
they can be unit-tested without Ansible (tests/test_inventory_validation.py) and joined into
one message.

site_model_resolve(data)
    Resolves the templates in the data model value by value: {'data': ..., 'errors': [...]}.
site_model_errors(data, groups, gateway_port=8080, xuudb_port=34463, required_groups=...,
                  reserved_accounts=())
    Cross-checks of {site, hpc_systems, hpc_users} against the inventory groups: groups and
    hosts of each HPC system, Slurm controller and partitions, UNICORE/X hosts and ports, hosts
    shared by two systems, and the users' accounts (unique names, uids and gids, no mapping to
    a reserved account).

Every check tolerates malformed input (the schema reports that) so that one run lists all
problems instead of stopping at the first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Slurm accepts these partition names in slurm.conf and on the sbatch command line.
SLURM_PARTITION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Groups that every site inventory needs: the services the bundle always deploys.
DEFAULT_REQUIRED_GROUPS = ("hub", "unity", "unicore_gateway", "unicore_xuudb", "unicore_servers")


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


def _hosts_phrase(hosts, limit=5):
    """"host 'a' is" or "hosts 'a', 'b' and 3 more are", for messages about many hosts."""
    if len(hosts) == 1:
        return "host '%s' is" % hosts[0]
    shown = ", ".join("'%s'" % h for h in hosts[:limit])
    more = " and %d more" % (len(hosts) - limit) if len(hosts) > limit else ""
    return "hosts %s%s are" % (shown, more)


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
            # An account's uid and gid must agree wherever the same xlogin is mapped on a system.
            for key, id_of in (("uid", uid_of), ("gid", gid_of)):
                value = account.get(key)
                if not _is_int(value):
                    continue
                clash = _claim(id_of, (sname, xlogin), value, apath)
                if clash:
                    errors.append(
                        "%s.%s: xlogin '%s' on %s has %s %d here but %s %d at %s"
                        % ((apath, key, xlogin, sname, key, value, key) + clash)
                    )
            # ... and one uid belongs to one xlogin.
            uid = account.get("uid")
            if _is_int(uid):
                clash = _claim(xlogin_of, (sname, uid), xlogin, apath)
                if clash:
                    errors.append(
                        "%s.uid: uid %d on %s is already the uid of xlogin '%s' (%s)" % ((apath, uid, sname) + clash)
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
    """The first line of a templating error; only its type under a password key (the text may quote the value)."""
    if "password" in path:
        return type(exc).__name__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class FilterModule:
    """Resolution and cross-checks of the site data model (see docs/inventory.md, "Validation")."""

    def filters(self):
        return {
            "site_model_resolve": site_model_resolve,
            "site_model_errors": site_model_errors,
        }
