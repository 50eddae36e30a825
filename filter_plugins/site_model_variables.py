# -*- coding: utf-8 -*-
"""Names of the inventory's variables: the names the bundle reads and the near misses of them.

playbooks/tasks/validate_site_model.yml compares every variable name the inventory sets with
the names the bundle reads (the data model keys, the roles' public variables, the site-wide
settings) and refuses a near miss with "did you mean": a misspelt optional key such as
'hpc_user' would otherwise be ignored. It also takes from the roles' defaults the service users
that no HPC user may be mapped to (site_model_errors in site_model_checks.py).

site_model_role_variables(defaults_texts)
    The public variables of the roles (keys of their defaults/main.yml files).
site_model_service_accounts(defaults_texts)
    The service users that the roles' defaults name (*_user keys).
site_model_unknown_variables(vars_by_host, known)
    Inventory variables whose names are near misses of known ones ("did you mean").
site_model_retired_variables(vars_by_host, retired)
    Inventory variables the bundle no longer reads, with the setting that replaced each.

Only names are read, never values; unparsable input is skipped rather than raised.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import yaml

# The data model's own top-level keys.
DATA_MODEL_KEYS = ("site", "hpc_systems", "hpc_system_defaults", "hpc_users")

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


def _hosts_named(hosts, limit=5):
    """"host 'a'" or "hosts 'a', 'b' and 3 more": the hosts that set a variable."""
    more = " and %d more" % (len(hosts) - limit) if len(hosts) > limit else ""
    return "host%s %s%s" % ("s" if len(hosts) > 1 else "", ", ".join("'%s'" % h for h in hosts[:limit]), more)


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
    vars_by_host = vars_by_host if isinstance(vars_by_host, Mapping) else {}
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
        where = "every host" if len(hosts) == all_hosts else _hosts_named(hosts)
        messages.append("%s: unknown variable (a typo?); did you mean '%s'? (set for %s)" % (name, match, where))
    return messages


def site_model_retired_variables(vars_by_host, retired):
    """Names set in the inventory that the bundle no longer reads: "name: ...; set <new>"."""
    retired = retired if isinstance(retired, Mapping) else {}
    vars_by_host = vars_by_host if isinstance(vars_by_host, Mapping) else {}
    hosts_of = {}
    for host, names in vars_by_host.items():
        for name in names or []:
            if str(name) in retired:
                hosts_of.setdefault(str(name), []).append(str(host))
    all_hosts = len(vars_by_host)
    messages = []
    for name in sorted(hosts_of):
        hosts = sorted(hosts_of[name])
        where = "every host" if len(hosts) == all_hosts else _hosts_named(hosts)
        messages.append("%s: no longer read by the bundle; set %s instead (set for %s)" % (name, retired[name], where))
    return messages


class FilterModule:
    """Variable names of the site inventory (see docs/inventory.md, "Validation")."""

    def filters(self):
        return {
            "site_model_role_variables": site_model_role_variables,
            "site_model_service_accounts": site_model_service_accounts,
            "site_model_unknown_variables": site_model_unknown_variables,
            "site_model_retired_variables": site_model_retired_variables,
        }
