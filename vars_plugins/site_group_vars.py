# -*- coding: utf-8 -*-
"""group_vars/host_vars loading that names the file and line of a YAML error.

ansible-core 2.19's host_group_vars re-raises a YAML error in a group_vars or host_vars
file as a bare "YAML parsing failed: ..." without the file (the error that knows it is
dropped). This plugin loads the same files the same way and keeps that error as the cause,
so Ansible prints "Origin: <file>:<line>:<column>" and the offending lines.
Enabled in ansible.cfg (vars_plugins_enabled) in place of host_group_vars.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: site_group_vars
    short_description: Loads group_vars and host_vars, naming the file and line of a YAML error
    requirements:
        - Enabled in configuration (in place of host_group_vars)
    description:
        - Loads YAML vars into corresponding groups/hosts in group_vars/ and host_vars/ directories,
          exactly as ansible.builtin.host_group_vars does.
        - A YAML syntax error stops the run with the file, line and column.
    options:
      stage:
        ini:
          - key: stage
            section: vars_site_group_vars
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
      _valid_extensions:
        default: [".yml", ".yaml", ".json"]
        description:
          - "Check all of these extensions when looking for 'variable' files which should be YAML or JSON or vaulted versions of these."
        env:
          - name: ANSIBLE_YAML_FILENAME_EXT
        ini:
          - key: yaml_valid_extensions
            section: defaults
        type: list
        elements: string
    extends_documentation_fragment:
      - vars_plugin_staging
"""

from ansible.errors import AnsibleParserError
from ansible.plugins.vars.host_group_vars import VarsModule as HostGroupVarsModule


class VarsModule(HostGroupVarsModule):
    """host_group_vars with the file and line of a parse error kept."""

    def get_vars(self, loader, path, entities, cache=True):
        try:
            return super().get_vars(loader, path, entities, cache=cache)
        except AnsibleParserError as exc:
            # host_group_vars raises a new error from inside its handler: the original one,
            # which carries the file and position, is the implicit context.
            cause = exc.__cause__ or exc.__context__
            if cause is None:
                raise
            raise AnsibleParserError(
                "Cannot read the inventory variables below %s (group_vars/host_vars): %s" % (path, cause)
            ) from cause
