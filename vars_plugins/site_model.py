# -*- coding: utf-8 -*-
"""The derived site model for every host: the variables in site_model.yml beside this file.

Each fact the roles share (a system's defaults and hosts, which system a host belongs to,
every service's address) is defined once there and read everywhere, in playbooks, roles,
ad-hoc commands and the tests alike (docs/inventory.md, "Derived variables"). The values are
templates over the inventory's data model, rendered when used, like group_vars/all.
Enabled in ansible.cfg (vars_plugins_enabled) after site_group_vars.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: site_model
    short_description: Derived site variables (site_systems, site_services, ...) for every host
    requirements:
        - Enabled in configuration
    description:
        - Adds the variables of vars_plugins/site_model.yml to the group 'all', and the role
          defaults that other roles share (SHARED_DEFAULTS) as __site_role_defaults.
    options:
      stage:
        ini:
          - key: stage
            section: vars_site_model
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
    extends_documentation_fragment:
      - vars_plugin_staging
"""

import os

import yaml
from ansible.inventory.group import InventoryObjectType
from ansible.plugins.vars import BaseVarsPlugin

HERE = os.path.dirname(os.path.realpath(__file__))
DERIVED_FILE = os.path.join(HERE, "site_model.yml")
ROLES_DIR = os.path.join(os.path.dirname(HERE), "roles")
# Role defaults that other roles need as well: the settings a service shares with its clients
# (ports, the TSI's port and account, XUUDB's identity prefix), the hub's JupyterHub version (the
# labs' jupyterhub-singleuser must match it) and the hub's OAuth client id (Unity registers it).
SHARED_DEFAULTS = {
    "unity_idm": ["unity_idm_port", "unity_idm_install_dir"],
    "unicore_common": ["unicore_common_base_dir"],
    "unicore_gateway": ["unicore_gateway_port"],
    "unicore_xuudb": ["unicore_xuudb_port", "unicore_xuudb_user_dn_prefix"],
    "unicore_unicorex": ["unicore_unicorex_tsi_port", "unicore_unicorex_tsi_reply_port_offset",
                         "unicore_unicorex_tsi_priveduser"],
    "unicore_tsi": ["unicore_tsi_dir"],
    # The health report (playbooks/status.yml) reads where the hub lives.
    "jupyterhub": ["jupyterhub_version", "jupyterhub_oauth_client_id", "jupyterhub_venv", "jupyterhub_config_dir",
                   "jupyterhub_hub_port"],
}


def _role_defaults():
    out = {}
    for role, keys in SHARED_DEFAULTS.items():
        with open(os.path.join(ROLES_DIR, role, "defaults", "main.yml"), encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        out.update({key: data[key] for key in keys})
    return out


class VarsModule(BaseVarsPlugin):
    """Derived variables for the group 'all'."""

    REQUIRES_ENABLED = True
    is_stateless = True
    _cache = None

    def get_vars(self, loader, path, entities, cache=True):
        if not isinstance(entities, list):
            entities = [entities]
        if not any(e.base_type is InventoryObjectType.GROUP and e.name == "all" for e in entities):
            return {}
        if VarsModule._cache is None or not cache:
            derived = loader.load_from_file(DERIVED_FILE, cache="all", unsafe=True, trusted_as_template=True)
            VarsModule._cache = dict(derived or {}, __site_role_defaults=_role_defaults())
        return dict(VarsModule._cache)
