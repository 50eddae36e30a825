# -*- coding: utf-8 -*-
"""site_packages: ansible.builtin.apt for packages that are missing, and nothing else.

Takes apt's arguments (name, state present, update_cache, cache_valid_time, policy_rc_d, ...).
It first asks dpkg which of the packages are installed (module dpkg_status, one cheap call per
host and run: the installed set is kept as the host fact site_packages_installed, so the next
site_packages task on that host asks nothing); only when some are missing does it run apt, for
all of them, and reads dpkg's status afresh. So a converged host costs no apt run, and a run
stays offline. When the host has no package lists at all (a minimal image with a fresh cache
timestamp), the lists are fetched regardless of cache_valid_time; a --check run cannot fetch them
and reports the packages it would install instead of asking apt.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

FACT = "site_packages_installed"


class ActionModule(ActionBase):
    """Install Debian packages that are missing (apt arguments)."""

    _VALID_ARGS = frozenset()  # apt's arguments are passed through as they are

    def _installed(self, task_vars, names):
        """(installed package names, apt has lists); the names from the host fact when it has them all."""
        known = set((task_vars or {}).get(FACT) or [])
        if known and all(n.split(":")[0] in known for n in names):
            return known, True, None
        state = self._execute_module("dpkg_status", module_args={"names": names, "lists": True, "all": True},
                                     task_vars=task_vars)
        if state.get("failed"):
            return None, False, state
        return set(state["installed"]), state["lists"], None

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        names = args.get("name") or args.get("pkg") or []
        names = [names] if isinstance(names, str) else list(names)
        installed, lists, failure = self._installed(task_vars, names)
        if failure:
            return dict(result, **failure)
        facts = {FACT: sorted(installed)}
        missing = [n for n in names if n.split(":")[0] not in installed]
        if not missing:
            return dict(result, changed=False, missing=[], ansible_facts=facts,
                        msg="installed: %s" % ", ".join(names))
        if not lists:
            if self._task.check_mode:
                return dict(result, changed=True, missing=missing, ansible_facts=facts,
                            msg="would install %s (no package lists yet: a real run fetches them)" % ", ".join(missing))
            args["update_cache"] = True
            args["cache_valid_time"] = 0
        apt = self._execute_module("ansible.builtin.apt", module_args=args, task_vars=task_vars)
        # apt may return facts of its own: they are kept beside the installed set.
        facts = dict(apt.pop("ansible_facts", None) or {}, **facts)
        if not apt.get("failed") and not self._task.check_mode:
            after = self._execute_module("dpkg_status", module_args={"names": names, "all": True}, task_vars=task_vars)
            facts[FACT] = after.get("installed", sorted(installed))
        return dict(result, missing=missing, ansible_facts=facts, **apt)
