#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Owner, mode and SHA-1 of a list of paths in one call (a missing path is reported, not warned about)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: file_state
short_description: Read owner, group, mode and SHA-1 of several paths at once
description:
  - Returns the state of every given path, and the paths that match shell patterns, so that a
    role can install only the files that differ from what it wants with one call per host
    instead of one per file. A path that does not exist is reported with exists false.
options:
  paths:
    description: Absolute paths of files, directories or links.
    type: list
    elements: path
    required: true
  globs:
    description: Shell patterns (glob) whose matching paths are listed in C(matches).
    type: list
    elements: str
    default: []
  checksum_algorithm:
    description: Hash of regular files' content.
    type: str
    choices: [sha1, sha256]
    default: sha1
"""

RETURN = r"""
state:
  description: Path -> {exists, isdir, islnk, owner, group, mode ("0644"), checksum (of a regular file)}.
  type: dict
  returned: always
matches:
  description: The paths that match the globs, sorted.
  type: list
  returned: always
"""

import glob

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.site_file_state import describe


def main():
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "required": True},
            "globs": {"type": "list", "elements": "str", "default": []},
            "checksum_algorithm": {"type": "str", "choices": ["sha1", "sha256"], "default": "sha1"},
        },
        supports_check_mode=True,
    )
    matches = sorted({path for pattern in module.params["globs"] for path in glob.glob(pattern)})
    algorithm = module.params["checksum_algorithm"]
    module.exit_json(changed=False, state={path: describe(path, algorithm) for path in module.params["paths"]},
                     matches=matches)


if __name__ == "__main__":
    main()
