# -*- coding: utf-8 -*-
"""The site model as every role reads it: the inventory's data model with its defaults applied.

vars_plugins/site_model.yml turns these filters into the variables site_systems, site_users,
site_host_system, site_host_groups and site_services, which every role and playbook reads
instead of deriving the same facts again (docs/inventory.md, "Derived variables"). They run
after validation (playbooks/validate.yml), so they may assume a valid data model; they still
never raise on odd input, because a lazily templated variable can be evaluated anywhere.

site_fqdn(name, domain)
    The one "host name -> FQDN" rule: an IP address or a dotted name is taken as it is,
    a short name gets the site domain.
site_model_systems(hpc_systems, groups, site, system_defaults)
    hpc_systems with every optional key filled in (built-in defaults, then the inventory's
    hpc_system_defaults, then the system's own keys) plus the hosts of each system and the
    nodes of each partition.
site_model_users(hpc_users, systems)
    hpc_users with every account filled in (gid = uid, projects = []), accounts on systems
    that do not exist dropped.
site_system_of_host(systems, host)
    The one HPC system whose login group, compute group or Slurm controller is the host, or ''.
site_host_groups(systems, host)
    The run-time groups a host belongs to (playbooks/prepare.yml makes them).
site_services(systems, groups, hostvars, site, role_defaults)
    Where every service is reached: host, FQDN, port and URLs of Unity, the Gateway, XUUDB,
    the hub (with its OAuth client) and each system's UNICORE/X.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

# Defaults of the optional per-system keys (docs/inventory.md). The inventory may change them
# for every system at once with hpc_system_defaults, and each system may set its own.
SYSTEM_DEFAULTS = {
    "login_node_jupyter": False,
    "accounts_managed": False,
    "unicore_tsi_mode": "remote",
    # None: UNICORE/X's job directories, $HOME/UNICORE_Jobs (the TSI) or the instance's jobs/
    # (the embedded TSI of tests).
    "unicore_filespace": None,
    "unicore_memory_mb": 512,
    # ssh: one multiplexed SSH connection per login node carries every lab's tunnel; UNICORE
    # port forwarding sets connections up one at a time per UNICORE/X (docs/jupyterhub.md).
    "jupyter_route": "ssh",
    "jupyter_tunnel_account": "jupyter-tunnel",
    "jupyter_tunnel_ssh_port": 22,
    "jupyter_env_prefix": "/opt/jupyter",
    # None: "<site.public_hub_url>/hub/api", filled in below.
    "jupyter_hub_api_url": None,
    # The idle culler stops a lab without activity for this long (0: never); its Slurm job ends.
    "jupyter_idle_timeout_minutes": 120,
}
SLURM_DEFAULTS = {"managed": False, "controller": None, "node_cpus": None, "node_real_memory_mb": None}
# None means "no limit": Slurm applies none, the spawn form shows none, UNICORE's IDB allows any.
PARTITION_DEFAULTS = {"default": False, "max_nodes": None, "max_runtime_minutes": None}

# Service groups of the data model, and the settings of each service that its clients must
# share: each is read from the service host's variables, else the owning role's default.
SERVICES = {
    "unity": {"group": "unity", "port": "unity_idm_port", "fqdn": "unity_idm_fqdn"},
    "gateway": {"group": "unicore_gateway", "port": "unicore_gateway_port"},
    "xuudb": {"group": "unicore_xuudb", "port": "unicore_xuudb_port",
              "shared": {"user_dn_prefix": "unicore_xuudb_user_dn_prefix"}},
}
# Settings of a system's UNICORE/X that its TSI must share (the unicore_unicorex role's).
UNICOREX_SHARED = {
    "tsi_port": "unicore_unicorex_tsi_port",
    "tsi_reply_port_offset": "unicore_unicorex_tsi_reply_port_offset",
    "tsi_user": "unicore_unicorex_tsi_priveduser",
}


def _mapping(value):
    return value if isinstance(value, Mapping) else {}


def _hosts(groups, name):
    return sorted(set(_mapping(groups).get(name) or [])) if isinstance(name, str) else []


def site_fqdn(name, domain):
    """The host's fully qualified name: IP addresses and dotted names as they are."""
    name = str(name)
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    return name if "." in name or not domain else "%s.%s" % (name, domain)


def site_model_systems(hpc_systems, groups, site=None, system_defaults=None):
    """hpc_systems with its defaults applied, plus hosts and partition nodes (see module doc)."""
    site = _mapping(site)
    defaults = dict(SYSTEM_DEFAULTS)
    defaults.update({k: v for k, v in _mapping(system_defaults).items() if k in SYSTEM_DEFAULTS})
    if defaults["jupyter_hub_api_url"] is None and site.get("public_hub_url"):
        defaults["jupyter_hub_api_url"] = str(site["public_hub_url"]).rstrip("/") + "/hub/api"
    out = {}
    for name, raw in sorted(_mapping(hpc_systems).items()):
        raw = _mapping(raw)
        system = dict(defaults)
        system.update(raw)
        system["name"] = name
        system["slurm"] = dict(SLURM_DEFAULTS, **_mapping(raw.get("slurm")))
        login = _hosts(groups, raw.get("login_group"))
        compute = _hosts(groups, raw.get("compute_group"))
        system["login_hosts"] = login
        system["compute_hosts"] = compute
        controller = system["slurm"]["controller"]
        system["hosts"] = sorted(set(login + compute + ([controller] if isinstance(controller, str) else [])))
        partitions = []
        for part in raw.get("partitions") or []:
            part = dict(PARTITION_DEFAULTS, **_mapping(part))
            part["nodes"] = sorted(set(part.get("nodes") or compute))
            partitions.append(part)
        system["partitions"] = partitions
        out[name] = system
    return out


def site_model_users(hpc_users, systems):
    """hpc_users with each account complete: gid defaults to uid, projects to []."""
    out = []
    for user in hpc_users or []:
        user = dict(_mapping(user))
        accounts = {}
        for system, account in sorted(_mapping(user.get("systems")).items()):
            if system not in _mapping(systems):
                continue
            account = dict(_mapping(account))
            account.setdefault("uid", None)
            if account.get("gid") is None:
                account["gid"] = account["uid"]
            account["projects"] = list(account.get("projects") or [])
            accounts[system] = account
        user["systems"] = accounts
        out.append(user)
    return out


def site_system_of_host(systems, host):
    """Name of the HPC system that lists the host ('' for service hosts such as the hub)."""
    for name, system in sorted(_mapping(systems).items()):
        if host in _mapping(system).get("hosts", []):
            return name
    return ""


def site_host_groups(systems, host):
    """The run-time groups of a host (playbooks/prepare.yml), sorted.

    hpc_system_<name>     every host of system <name>
    hpc_login             login nodes of every system (TSI, Jupyter environment)
    hpc_nodes             login and compute nodes of every system (where labs run)
    hpc_accounts_managed  hosts of systems with accounts_managed: true
    hpc_slurm_managed     hosts of systems whose Slurm the bundle manages
    hpc_slurm_external    login nodes of systems whose Slurm is managed elsewhere
    hpc_tunnel_login      login nodes of systems whose labs the hub reaches by SSH tunnel
    """
    name = site_system_of_host(systems, host)
    if not name:
        return []
    system = systems[name]
    out = {"hpc_system_" + name}
    if host in system["login_hosts"]:
        out.add("hpc_login")
        if system.get("jupyter_route") == "ssh":
            out.add("hpc_tunnel_login")
    if host in system["login_hosts"] or host in system["compute_hosts"]:
        out.add("hpc_nodes")
    if system.get("accounts_managed") is True:
        out.add("hpc_accounts_managed")
    if system["slurm"].get("managed") is True:
        out.add("hpc_slurm_managed")
    elif host in system["login_hosts"]:
        out.add("hpc_slurm_external")
    return sorted(out)


def _host_var(hostvars, host, name):
    try:
        return hostvars[host].get(name)
    except (KeyError, TypeError, AttributeError):
        return None


def _setting(hostvars, host, name, defaults):
    """A service's setting: the inventory's value for its host, else its role's default."""
    value = _host_var(hostvars, host, name) if host else None
    return defaults.get(name) if value is None else value


def site_services(systems, groups, hostvars, site, role_defaults):
    """Where each service is reached: {unity, gateway, xuudb, hub, unicorex: {<system>: ...}}.

    A service runs on the first host of its group. Its port (and the other settings its
    clients share) is the value the inventory gives that host, else the owning role's default
    (role_defaults, from the roles' defaults/main.yml), so that a service and its clients agree.
    """
    domain = _mapping(site).get("domain", "")
    defaults = _mapping(role_defaults)
    out = {}
    for key, spec in SERVICES.items():
        hosts = _mapping(groups).get(spec["group"]) or []
        host = hosts[0] if hosts else ""
        fqdn = (_host_var(hostvars, host, spec["fqdn"]) if "fqdn" in spec and host else None) \
            or (site_fqdn(host, domain) if host else "")
        port = int(_setting(hostvars, host, spec["port"], defaults) or 0)
        out[key] = {"host": host, "fqdn": fqdn, "port": port, "url": "https://%s:%d" % (fqdn, port) if host else ""}
        for name, var in spec.get("shared", {}).items():
            out[key][name] = _setting(hostvars, host, var, defaults)
    unity = out["unity"]["url"]
    out["unity"].update({
        "issuer": unity + "/oauth2",
        "authorize_url": unity + "/oauth2-as/oauth2-authz",
        "token_url": unity + "/oauth2/token",
        "userinfo_url": unity + "/oauth2/userinfo",
    })
    hub_hosts = _mapping(groups).get("hub") or []
    hub = hub_hosts[0] if hub_hosts else ""
    hub_url = str(_mapping(site).get("public_hub_url", "")).rstrip("/")
    out["hub"] = {
        "host": hub,
        "url": hub_url,
        # The hub's OAuth client at Unity: its id (the jupyterhub role's setting) and callback.
        "oauth_client_id": _setting(hostvars, hub, "jupyterhub_oauth_client_id", defaults),
        "oauth_callback_url": hub_url + "/hub/oauth_callback",
    }
    out["unicorex"] = {}
    for name, system in sorted(_mapping(systems).items()):
        host = system.get("unicorex_host", "")
        port = int(system.get("unicorex_port") or 0)
        base = "%s/%s" % (out["gateway"]["url"], name)
        entry = {
            "host": host,
            "fqdn": site_fqdn(host, domain) if host else "",
            "port": port,
            # The public address (through the Gateway) and the REST base the hub and users call.
            "url": base,
            "rest_url": base + "/rest/core",
        }
        entry.update({key: _setting(hostvars, host, var, defaults) for key, var in UNICOREX_SHARED.items()})
        # The TSI calls UNICORE/X back on this port (CLASSICTSI.replyport).
        entry["tsi_reply_port"] = port + int(entry.pop("tsi_reply_port_offset") or 0)
        out["unicorex"][name] = entry
    return out


class FilterModule:
    """The derived site model (docs/inventory.md, "Derived variables")."""

    def filters(self):
        return {
            "site_fqdn": site_fqdn,
            "site_model_systems": site_model_systems,
            "site_model_users": site_model_users,
            "site_system_of_host": site_system_of_host,
            "site_host_groups": site_host_groups,
            "site_services": site_services,
        }
