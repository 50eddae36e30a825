# -*- coding: utf-8 -*-
"""Skeleton placeholders (__UPPER_CASE__) left in the inventory files of a site.

templates/inventory marks what a new site must fill in as __UPPER_CASE__;
playbooks/tasks/validate_site_model.yml refuses an inventory that still holds one anywhere,
for example __SITE_DOMAIN__ in hosts.yml when only site.yml was filled.

site_model_placeholders(sources, ignore_patterns)
    "<file> <key path>: ..." messages for every key or value of the inventory's YAML files
    (the sources themselves and their group_vars/host_vars trees) that holds a placeholder.
    Comments are not read; files that match Ansible's INVENTORY_IGNORE_PATTERNS, such as the
    secrets directory, are skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import yaml

# templates/inventory marks what a new site must fill in as __UPPER_CASE__.
PLACEHOLDER_RE = re.compile(r"__[A-Z][A-Z0-9_]*__")
_VARS_DIRS = ("group_vars", "host_vars")
_YAML_EXTS = (".yml", ".yaml", ".json")


def _join(path, key):
    if isinstance(key, int):
        return "%s[%d]" % (path, key)
    return "%s.%s" % (path, key) if path else str(key)


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
    """Placeholders left in the site inventory (see docs/inventory.md, "Validation")."""

    def filters(self):
        return {
            "site_model_placeholders": site_model_placeholders,
        }
