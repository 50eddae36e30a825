#!/usr/bin/python
# -*- coding: utf-8 -*-
"""A compute node's converged state in one record, and one call that tells whether it still holds."""

from __future__ import annotations

DOCUMENTATION = r"""
module: node_state
short_description: Record what a converged run left on a node, and check it in one call
description:
  - C(state=record) (after every node role ran in this run) writes a record to C(path) - the
    run's inputs digest, the owner, mode and checksum of every file the roles manage, of the
    account and package databases, the matches of the roles' shell patterns, and the state of
    the node's services. It reports changed only when the record differs.
  - C(state=check) reads the record and compares it with the node as it is now and with the
    inputs digest of this run. C(converged) is true only when all of it is equal; C(reason)
    says what differs first. Only reads, also in check mode.
options:
  path:
    description: The record's file (root-only).
    type: path
    required: true
  digest:
    description: Digest of everything the node roles' result depends on (filter node_state_digest).
    type: str
    required: true
  state:
    description: check or record.
    type: str
    choices: [check, record]
    default: check
  paths:
    description: (record) The files and directories the node roles manage.
    type: list
    elements: path
    default: []
  globs:
    description: (record) Shell patterns whose matching paths the roles look for.
    type: list
    elements: str
    default: []
  units:
    description: (record) systemd units that must stay enabled and active.
    type: list
    elements: str
    default: []
"""

RETURN = r"""
converged:
  description: (check) The record exists, its digest is this run's and the node is as recorded.
  type: bool
  returned: always
reason:
  description: (check) What differs first, in words; empty when converged.
  type: str
  returned: always
"""

import glob
import json
import os
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.site_file_state import describe

# Any account or package change on the node, also one no role made, sends it through the roles.
ALWAYS = ["/etc/passwd", "/etc/group", "/var/lib/dpkg/status"]


def units_state(units):
    """{unit: "enabled/active"} from one systemctl call."""
    if not units:
        return {}
    out = subprocess.run(["systemctl", "show", "--property=Id,UnitFileState,ActiveState", "--", *units],
                         capture_output=True, text=True, check=False).stdout
    states, blocks = {}, [b for b in out.strip().split("\n\n") if b.strip()]
    for unit, block in zip(units, blocks):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = "%s/%s" % (props.get("UnitFileState", ""), props.get("ActiveState", ""))
    for unit in units[len(blocks):]:
        states[unit] = "unknown"
    return states


def observe(paths, globs, units):
    """The node as it is now, in the record's form."""
    return {
        "files": {path: describe(path) for path in sorted(set(paths) | set(ALWAYS))},
        "matches": {pattern: sorted(glob.glob(pattern)) for pattern in sorted(set(globs))},
        "units": units_state(sorted(set(units))),
    }


def check(path, digest):
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return False, "no record of a converged run on this node yet"
    except ValueError:
        return False, "the record %s is not readable" % path
    if record.get("digest") != digest:
        return False, "the inventory, the site secrets or the bundle changed since the recorded run"
    now = observe(record.get("files", {}), record.get("matches", {}), record.get("units", {}))
    for kind, word in (("files", "file"), ("matches", "pattern"), ("units", "unit")):
        for key, value in record.get(kind, {}).items():
            if now[kind].get(key) != value:
                return False, "%s %s differs from the recorded run" % (word, key)
    return True, ""


def record(module, path, digest):
    content = dict(digest=digest, **observe(module.params["paths"], module.params["globs"], module.params["units"]))
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    try:
        with open(path) as handle:
            if handle.read() == text:
                return False
    except (FileNotFoundError, ValueError):
        pass
    if not module.check_mode:
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".node-state.")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "digest": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["check", "record"], "default": "check"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "globs": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    path, digest = module.params["path"], module.params["digest"]
    if module.params["state"] == "record":
        module.exit_json(changed=record(module, path, digest), converged=True, reason="")
    converged, reason = check(path, digest)
    module.exit_json(changed=False, converged=converged, reason=reason)


if __name__ == "__main__":
    main()
