# -*- coding: utf-8 -*-
"""Writes a run's per-host counters (what PLAY RECAP prints) as JSON to the file $IHPC_STATS_FILE.

The tests read every run's counters from that file (tests/conftest.py, read_recap) while the
configured stdout callback keeps printing the messages they check. Put this directory into
ANSIBLE_CALLBACK_PLUGINS and name the file in IHPC_STATS_FILE; the plugin needs no enabling,
so the callbacks that ansible.cfg enables stay as they are. Without IHPC_STATS_FILE it writes
nothing.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: stats_file
    type: aggregate
    short_description: Writes the per-host counters of the PLAY RECAP as JSON to a file
    description:
      - "Writes {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} to the file
        named by IHPC_STATS_FILE, with the names the PLAY RECAP prints."
      - ansible-playbook sends the recap once per playbook file, each time with the counters of
        the whole run so far; the file holds the last one, the counters of the whole run.
    options:
      path:
        description: The file to write; nothing is written when it is not set.
        type: str
        env:
          - name: IHPC_STATS_FILE
"""

# AggregateStats.summarize() names -> the names the PLAY RECAP prints.
RECAP_NAMES = {"ok": "ok", "changed": "changed", "unreachable": "unreachable", "failures": "failed",
               "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}


class CallbackModule(CallbackBase):
    """The PLAY RECAP's counters as a JSON file."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "stats_file"
    # Loaded from ANSIBLE_CALLBACK_PLUGINS without being listed in callbacks_enabled.
    CALLBACK_NEEDS_ENABLED = False

    def v2_playbook_on_stats(self, stats):
        path = self.get_option("path")
        if not path:
            return
        counters = {}
        for host in sorted(stats.processed):
            summary = stats.summarize(host)
            counters[host] = {recap: int(summary.get(name, 0)) for name, recap in RECAP_NAMES.items()}
        # Written whole, then renamed: a reader never sees half a file.
        partial = "%s.partial" % path
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(counters, handle, indent=1, sort_keys=True)
        os.replace(partial, path)
