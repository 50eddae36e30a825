#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Which of the given Debian packages are installed (read from dpkg's status file, no apt)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: dpkg_status
short_description: Tell which of some Debian packages are installed
description:
  - Reads /var/lib/dpkg/status; cheap, and the same in check mode. Used by the action
    site_packages, which runs apt only for packages that are missing.
options:
  names:
    description: Package names (an architecture qualifier such as C(:amd64) is ignored).
    type: list
    elements: str
    required: true
  lists:
    description: Also report whether apt has package lists (C(/var/lib/apt/lists/*_Packages*)).
    type: bool
    default: false
  all:
    description: Also return every installed package's name (C(installed)).
    type: bool
    default: false
"""

RETURN = r"""
missing:
  description: The names that are not installed, in the order given.
  type: list
  returned: always
lists:
  description: Whether apt has package lists (only with lists=true).
  type: bool
  returned: when lists is true
installed:
  description: The names of all installed packages, sorted (only with all=true).
  type: list
  returned: when all is true
"""

import glob

from ansible.module_utils.basic import AnsibleModule

STATUS = "/var/lib/dpkg/status"


def installed_packages(text):
    """Names of the packages whose status is 'install ok installed'."""
    out, name = set(), None
    for line in text.splitlines():
        if line.startswith("Package: "):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Status: ") and name:
            if line.split(":", 1)[1].split()[-1] == "installed":
                out.add(name)
        elif not line.strip():
            name = None
    return out


def main():
    module = AnsibleModule(argument_spec={"names": {"type": "list", "elements": "str", "required": True},
                                          "lists": {"type": "bool", "default": False},
                                          "all": {"type": "bool", "default": False}},
                           supports_check_mode=True)
    try:
        with open(STATUS, encoding="utf-8", errors="replace") as handle:
            have = installed_packages(handle.read())
    except FileNotFoundError:
        have = set()
    result = {"changed": False, "missing": [n for n in module.params["names"] if n.split(":")[0] not in have]}
    if module.params["lists"]:
        result["lists"] = bool(glob.glob("/var/lib/apt/lists/*_Packages*"))
    if module.params["all"]:
        result["installed"] = sorted(have)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
