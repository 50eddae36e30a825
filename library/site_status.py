#!/usr/bin/python
# -*- coding: utf-8 -*-
"""One host's part of the site's health report (playbooks/status.yml): read-only, one call."""

from __future__ import annotations

DOCUMENTATION = r"""
module: site_status
short_description: Read the state of a host's services, certificate, Slurm, TSI reachability and accounts
description:
  - For playbooks/status.yml. Reads, changes nothing (check mode or not): whether each given
    systemd unit is active and its port listening, the installed version where it can be read,
    the days until the host certificate expires, the Slurm partitions (on a controller), whether
    TCP endpoints answer (UNICORE/X -> TSI), which mapped accounts the host does not know, and
    the hub's running labs per system (from its sqlite database).
options:
  services:
    description: "[{name, unit, port (0: none), version (a fixed string), version_package (a Debian
      package), version_command (argv; first line of its output), version_glob (a path pattern
      with one '*' in its last part: the newest version (starting with a digit) that stands
      there, e.g. of an unpacked release directory or of a jar)}]"
    type: list
    elements: dict
    default: []
  certificate:
    description: PEM certificate whose expiry to report ('' for none).
    type: str
    default: ""
  slurm_partitions:
    description: Report sinfo's partitions (on a Slurm controller).
    type: bool
    default: false
  unicore_sites:
    description: "[{system, url}]: UNICORE/X base URLs (through the Gateway) whose external
      connections (TSI, XUUDB, OIDC) to report, from UNICORE/X's own view (GET <url>?fields=server,
      anonymous). Not a TCP probe of the TSI: TSI 11.0.1 exits on a connection without TLS."
    type: list
    elements: dict
    default: []
  ca_file:
    description: CA bundle for unicore_sites.
    type: str
    default: ""
  accounts:
    description: "[{user, system, xlogin}] that must resolve on this host (getent passwd)."
    type: list
    elements: dict
    default: []
  hub_site_json:
    description: The hub's site.json ('' on other hosts); its db_url names the sqlite database.
    type: str
    default: ""
"""

RETURN = r"""
services:
  description: "[{name, unit, active, listening (null without a port), version}]"
  type: list
  returned: always
certificate_days:
  description: Whole days until the certificate expires (null without one or when unreadable).
  type: int
  returned: always
partitions:
  description: "[{name, available, nodes, idle, states}]"
  type: list
  returned: always
unicore:
  description: "[{system, connection, status, ok}] (connection "(UNICORE/X)" with the error when it does not answer)"
  type: list
  returned: always
missing_accounts:
  description: "[{user, system, xlogin}] not known on the host"
  type: list
  returned: always
labs:
  description: "{system: number of running labs} (null off the hub, or when the database is not sqlite: labs_error)"
  type: dict
  returned: always
"""

import datetime
import glob
import json
import os
import re
import ssl
import subprocess
import urllib.request

from ansible.module_utils.basic import AnsibleModule


def run(argv, timeout=15):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return out.returncode, out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


def listening_ports():
    rc, out = run(["ss", "-Hltn"])
    ports = set()
    for line in out.splitlines() if rc == 0 else []:
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1].isdigit():
            ports.add(int(fields[3].rsplit(":", 1)[-1]))
    return ports


def _natural(text):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def version_of(svc):
    if svc.get("version"):
        return str(svc["version"])
    if svc.get("version_package"):
        rc, out = run(["dpkg-query", "-W", "-f=${Version}", svc["version_package"]])
        return out if rc == 0 and out else "not installed"
    if svc.get("version_glob"):
        pattern = str(svc["version_glob"])
        head, tail = os.path.basename(pattern).split("*", 1)
        # The version is what stands for the '*' and starts with a digit (not "api-4.2.0").
        shape = re.compile(re.escape(head) + r"(\d[^/]*)" + re.escape(tail) + "$")
        found = sorted((m.group(1) for m in (shape.match(os.path.basename(p)) for p in glob.glob(pattern)) if m),
                       key=_natural)
        return found[-1] if found else "not installed"
    if svc.get("version_command"):
        rc, out = run([str(a) for a in svc["version_command"]])
        return out.splitlines()[0] if rc == 0 and out else "unknown"
    return ""


def services(wanted):
    ports = listening_ports()
    out = []
    for svc in wanted:
        rc, state = run(["systemctl", "is-active", svc["unit"]])
        port = int(svc.get("port") or 0)
        out.append({"name": svc["name"], "unit": svc["unit"], "active": state == "active", "state": state or "unknown",
                    "port": port or None, "listening": (port in ports) if port else None, "version": version_of(svc)})
    return out


def certificate_days(path):
    if not path:
        return None
    rc, out = run(["openssl", "x509", "-noout", "-enddate", "-in", path])
    if rc != 0 or "=" not in out:
        return None
    end = datetime.datetime.strptime(out.split("=", 1)[1].replace(" GMT", "").strip(), "%b %d %H:%M:%S %Y")
    return (end - datetime.datetime.utcnow()).days


def partitions():
    rc, out = run(["sinfo", "-h", "-o", "%R|%a|%D|%t"])
    if rc != 0:
        return [{"name": "(sinfo failed)", "available": "down", "nodes": 0, "idle": 0, "states": out[:200]}]
    parts = {}
    for line in out.splitlines():
        name, avail, count, state = (line.split("|") + ["", "", "0", ""])[:4]
        p = parts.setdefault(name, {"name": name, "available": avail, "nodes": 0, "idle": 0, "states": []})
        p["nodes"] += int(count or 0)
        if state.rstrip("*~#$@") == "idle":
            p["idle"] += int(count or 0)
        p["states"].append(f"{count} {state}")
    return [dict(p, states=", ".join(p["states"])) for p in parts.values()]


def unicore_connections(sites, ca_file):
    out = []
    context = ssl.create_default_context(cafile=ca_file or None)
    for site in sites:
        url = site["url"].rstrip("/") + "/rest/core?fields=server"
        try:
            request = urllib.request.Request(url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, context=context, timeout=15) as answer:
                server = json.load(answer).get("server", {})
        except (OSError, ValueError) as e:
            out.append({"system": site["system"], "connection": "(UNICORE/X)", "status": str(e)[:200], "ok": False})
            continue
        for name, status in sorted((server.get("externalConnections") or {}).items()):
            out.append({"system": site["system"], "connection": name, "status": str(status)[:200],
                        "ok": str(status).startswith("OK")})
    return out


def missing_accounts(accounts):
    return [a for a in accounts if run(["getent", "passwd", str(a["xlogin"])])[0] != 0]


def labs(site_json):
    if not site_json:
        return None
    import sqlite3  # noqa: PLC0415  (only on the hub)

    with open(site_json, encoding="utf-8") as f:
        url = json.load(f).get("db_url", "")
    if not url.startswith("sqlite:///"):
        raise ValueError("the hub's database is not sqlite (read the hub's API instead)")
    database = url[len("sqlite:///"):]
    if not os.path.isabs(database):
        raise ValueError(f"the hub's sqlite database {database!r} is not an absolute path")

    counts = {}
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT user_options FROM spawners WHERE server_id IS NOT NULL").fetchall()
    finally:
        conn.close()
    for (options,) in rows:
        try:
            system = (json.loads(options or "{}") or {}).get("system", "?")
        except ValueError:
            system = "?"
        counts[system] = counts.get(system, 0) + 1
    return counts


def main():
    module = AnsibleModule(
        argument_spec={
            "services": {"type": "list", "elements": "dict", "default": []},
            "certificate": {"type": "str", "default": ""},
            "slurm_partitions": {"type": "bool", "default": False},
            "unicore_sites": {"type": "list", "elements": "dict", "default": []},
            "ca_file": {"type": "str", "default": ""},
            "accounts": {"type": "list", "elements": "dict", "default": []},
            "hub_site_json": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        lab_counts = labs(p["hub_site_json"])
        labs_error = ""
    except Exception as e:  # noqa: BLE001  (a locked or missing database is a finding, not a crash)
        lab_counts, labs_error = None, str(e)[:200]
    module.exit_json(
        changed=False,
        services=services(p["services"]),
        certificate_days=certificate_days(p["certificate"]),
        partitions=partitions() if p["slurm_partitions"] else [],
        unicore=unicore_connections(p["unicore_sites"], p["ca_file"]),
        missing_accounts=missing_accounts(p["accounts"]),
        labs=lab_counts,
        labs_error=labs_error,
    )


if __name__ == "__main__":
    main()
