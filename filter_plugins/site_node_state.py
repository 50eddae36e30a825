# -*- coding: utf-8 -*-
"""node_state_digest: one digest of everything the node roles' result on a host depends on.

A compute node whose record (library/node_state.py) holds this run's digest, and whose files,
services and account and package databases are as recorded, is left out of the node roles'
plays (playbooks/tasks/node_state_check.yml). So the digest must change whenever a run could
leave something else on the node:

- the bundle's code the node roles run (their role trees, the plugins and the playbooks);
- the controller's site secrets (site_secrets_dir: the CA, munge keys, ...), by content;
- what the site model says about the host and its system, and the users;
- every inventory value of the node roles' variables, and the content of a controller file
  such a value names (a CA bundle of the site's own, for example).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CODE = ("library", "module_utils", "action_plugins", "lookup_plugins", "filter_plugins", "vars_plugins", "playbooks")


def _hash_tree(digest, top):
    """Adds every file under top (names relative to top, and contents) to digest."""
    top = pathlib.Path(top)
    if not top.is_dir():
        digest.update(b"\0missing:" + str(top).encode())
        return
    for path in sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(b"\0" + str(path.relative_to(top)).encode() + b"\0")
        digest.update(path.read_bytes())


def _role_variables(roles):
    """The public variables of roles: the keys of their defaults/main.yml."""
    import yaml

    names = set()
    for name in roles:
        path = ROOT / "roles" / name / "defaults" / "main.yml"
        if path.is_file():
            names |= set((yaml.safe_load(path.read_text()) or {}).keys())
    return sorted(names)


def node_state_digest(inputs, host_vars, roles):
    """sha256 over the code of roles (names under ROOT/roles) and CODE, the host's site secrets,
    inputs (JSON-able: the site model's view of the host) and the host's inventory values of
    the roles' variables (host_vars: hostvars[inventory_hostname])."""
    digest = hashlib.sha256()
    for top in [ROOT / "roles" / name for name in sorted(roles)] + [ROOT / name for name in CODE]:
        _hash_tree(digest, top)
    _hash_tree(digest, os.path.expanduser(str(host_vars["site_secrets_dir"])))
    role_vars = {name: host_vars[name] for name in _role_variables(roles) if name in host_vars}
    for name, value in sorted(role_vars.items()):
        if isinstance(value, str) and value.startswith("/") and os.path.isfile(value):
            digest.update(b"\0file:" + value.encode() + b"\0" + pathlib.Path(value).read_bytes())
    digest.update(json.dumps({"inputs": inputs, "role_vars": role_vars}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class FilterModule:
    def filters(self):
        return {"node_state_digest": node_state_digest}
