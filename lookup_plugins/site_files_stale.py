# -*- coding: utf-8 -*-
"""The paths of a role's directories and files that a host lacks or holds in another version.

A role lists what it installs and reads the host's state of all of it with one call of the
module file_state (library/file_state.py); this lookup compares the two and returns the paths
whose type, owner, group, mode or content differ, so that the role's copy, template and file
tasks run only for them. A converged host then costs one module call instead of one or two per
file (docs/architecture.md, "Converged runs").

    query('site_files_stale', entries, state=<registered file_state result>)

Each entry: path, owner, group, mode, and one of
    directory: true
    template: <role template>   (optional template_vars: {...}), rendered as the template module does
    src: <role file>            (the copy module's src)
    content: <text>             (the copy module's content)
    sha1: <hex>                 (the SHA-1 of what the role installs, computed by the role)
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: site_files_stale
short_description: Paths of wanted files and directories that differ from a host's file_state
description:
  - Renders templates with the builtin template lookup and reads role files with the builtin
    file lookup, so that the content compared is exactly what the template and copy tasks write.
options:
  _terms:
    description: The entries (a list of dicts).
    required: true
  state:
    description: The registered result of the file_state module for the entries' paths.
    type: dict
    required: true
"""

import hashlib
from collections.abc import Mapping

from ansible.errors import AnsibleError
from ansible.plugins.loader import lookup_loader
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    """query('site_files_stale', entries, state=...) -> [path, ...]"""

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        result = self.get_option("state") or {}
        result = result.get("state", {}) if isinstance(result, Mapping) else {}
        entries = []
        for term in terms:
            entries.extend(term if isinstance(term, list) else [term])
        stale = []
        for entry in entries:
            got = result.get(entry["path"])
            if got is None:
                raise AnsibleError("site_files_stale: %s is not in the file_state result" % entry["path"])
            if not got.get("exists") or (got.get("owner"), got.get("group"), got.get("mode")) != (
                    entry.get("owner"), entry.get("group"), entry.get("mode")):
                stale.append(entry["path"])
            elif entry.get("directory"):
                if not got.get("isdir"):
                    stale.append(entry["path"])
            elif got.get("isdir") or got.get("checksum") != self._sha1(entry, variables):
                stale.append(entry["path"])
        return stale

    def _sha1(self, entry, variables):
        if "sha1" in entry:
            return entry["sha1"]
        if "template" in entry:
            lookup = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
            text = lookup.run([entry["template"]], variables, template_vars=entry.get("template_vars") or {})[0]
        elif "src" in entry:
            lookup = lookup_loader.get("ansible.builtin.file", loader=self._loader, templar=self._templar)
            text = lookup.run([entry["src"]], variables, rstrip=False)[0]
        else:
            text = entry.get("content", "")
        return hashlib.sha1(str(text).encode("utf-8")).hexdigest()
