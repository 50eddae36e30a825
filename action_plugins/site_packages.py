# -*- coding: utf-8 -*-
"""site_packages: ansible.builtin.apt for packages that are missing, and nothing else.

Takes apt's arguments (name, state present, update_cache, cache_valid_time, policy_rc_d, ...).
It first asks dpkg (module dpkg_status, one cheap call) which of the packages are installed;
only when some are missing does it run apt, for all of them. So a converged host costs no apt
run, and a run stays offline. When the host has no package lists at all (a minimal image with
a fresh cache timestamp), the lists are fetched regardless of cache_valid_time; a --check run
cannot fetch them and reports the packages it would install instead of asking apt.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    """Install Debian packages that are missing (apt arguments)."""

    _VALID_ARGS = frozenset()  # apt's arguments are passed through as they are

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        names = args.get("name") or args.get("pkg") or []
        names = [names] if isinstance(names, str) else list(names)
        state = self._execute_module("dpkg_status", module_args={"names": names, "lists": True}, task_vars=task_vars)
        if state.get("failed"):
            return dict(result, **state)
        missing = state["missing"]
        if not missing:
            return dict(result, changed=False, missing=[], msg="installed: %s" % ", ".join(names))
        if not state.get("lists"):
            if self._task.check_mode:
                return dict(result, changed=True, missing=missing,
                            msg="would install %s (no package lists yet: a real run fetches them)" % ", ".join(missing))
            args["update_cache"] = True
            args["cache_valid_time"] = 0
        apt = self._execute_module("ansible.builtin.apt", module_args=args, task_vars=task_vars)
        return dict(result, missing=missing, **apt)
