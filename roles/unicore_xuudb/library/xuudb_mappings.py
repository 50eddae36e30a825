#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Keep the XUUDB's user mappings equal to a desired list, over the XUUDB admin web service."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: xuudb_mappings
short_description: Make the mappings of a UNICORE XUUDB equal to a given list
description:
  - Reads every mapping (GCID, DN, xlogin, role, projects) of a XUUDB server through its admin web
    service (SOAP C(XUUDBAdmin), mutual TLS with a certificate listed in the server's ACL file) and,
    when they differ from O(mappings), replaces the whole content with O(mappings) in one import
    (the server's "clean" import), so that the inventory stays the only source of truth.
  - Needs only Python's standard library on the host; the XUUDB admin client is not used.
  - DNs are compared case-blind on attribute names, as the server stores them normalised.
options:
  url:
    description: Base URL of the XUUDB server, C(https://host:port).
    type: str
    required: true
  client_cert:
    description: PEM certificate whose subject is in the XUUDB ACL file.
    type: path
    required: true
  client_key:
    description: PEM private key of O(client_cert).
    type: path
    required: true
  ca_file:
    description: PEM CA bundle that verifies the server's certificate (and its host name).
    type: path
    required: true
  mappings:
    description: The desired mappings.
    type: list
    elements: dict
    required: true
    suboptions:
      gcid: {description: Grid component ID (the UNICORE/X site name)., type: str, required: true}
      dn: {description: Distinguished name of the identity (RFC 2253)., type: str, required: true}
      xlogin: {description: Unix login(s); several are separated by C(:)., type: str, required: true}
      role: {description: UNICORE role., type: str, default: user}
      projects: {description: Unix groups / projects, separated by C(:)., type: str, default: ""}
  timeout:
    description: Seconds per request.
    type: int
    default: 60
author:
  - ihpc deployment bundle
"""

EXAMPLES = r"""
- name: Load the mappings from the inventory
  xuudb_mappings:
    url: https://unicore.example.org:34463
    client_cert: /etc/ihpc/pki/host.crt
    client_key: /etc/ssl/private/ihpc-host.key
    ca_file: /etc/ihpc/pki/ca.pem
    mappings:
      - {gcid: cluster1, dn: "UID=alice", xlogin: alice, role: user}
"""

RETURN = r"""
added:
  description: Mappings that were (or, in check mode, would be) added, as C(gcid;dn;xlogin;role;projects).
  type: list
  returned: always
removed:
  description: Mappings that were (or would be) removed, in the same form.
  type: list
  returned: always
count:
  description: Number of mappings in the XUUDB afterwards.
  type: int
  returned: success
"""

import http.client
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible.module_utils.basic import AnsibleModule

NS = "http://www.fz-juelich.de/unicore/xuudb"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SERVICE = "/XUUDBAdmin"
FIELDS = ("gcID", "Token", "xlogin", "role", "projects")


class XuudbError(Exception):
    pass


def envelope(body):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soap:Envelope xmlns:soap="%s"><soap:Body>%s</soap:Body></soap:Envelope>' % (SOAP_NS, body)
    ).encode("utf-8")


def login_xml(tag, entry):
    inner = "".join(
        "<x:%s>%s</x:%s>" % (field, escape(entry[key]), field)
        for field, key in zip(FIELDS, ("gcid", "dn", "xlogin", "role", "projects"))
    )
    return "<x:%s>%s</x:%s>" % (tag, inner, tag)


def normalise_dn(dn):
    """'uid=alice, O=X' -> 'UID=alice,O=X': attribute names upper case, no blanks around separators."""
    parts = []
    for rdn in dn.split(","):
        if "=" in rdn:
            name, value = rdn.split("=", 1)
            parts.append("%s=%s" % (name.strip().upper(), value.strip()))
        else:
            parts.append(rdn.strip())
    return ",".join(parts)


def row(entry):
    return ";".join([entry["gcid"], normalise_dn(entry["dn"]), entry["xlogin"], entry["role"], entry["projects"]])


def clean_mappings(mappings):
    """The requested mappings with blanks stripped; raises XuudbError for an incomplete one."""
    desired = [dict(m) for m in mappings]
    for entry in desired:
        for key in ("gcid", "dn", "xlogin", "role", "projects"):
            entry[key] = (entry.get(key) or "").strip()
        if not entry["gcid"] or not entry["dn"] or not entry["xlogin"]:
            raise XuudbError("every mapping needs gcid, dn and xlogin: %s" % entry)
    return desired


def case_blind_rows(entries):
    return sorted(set(row(e).lower() for e in entries))


def compare(desired, current):
    """What an import must change so that the XUUDB holds exactly `desired` (no I/O).

    Returns want and have (the distinct rows), added and removed (rows), changed, and
    to_import: one entry per mapping, for the server's clean import.
    """
    want = sorted(set(row(e) for e in desired))
    have = sorted(set(row(e) for e in current))
    # The server may store DNs in another letter case: compare case-blind.
    want_cmp = {r.lower(): r for r in want}
    have_cmp = {r.lower(): r for r in have}
    added = [want_cmp[k] for k in sorted(set(want_cmp) - set(have_cmp))]
    removed = [have_cmp[k] for k in sorted(set(have_cmp) - set(want_cmp))]
    return dict(
        want=want, have=have, added=added, removed=removed,
        # A row the database holds twice is a difference too: the clean import drops the copy.
        changed=bool(added or removed) or len(current) != len(have),
        to_import=list({row(e).lower(): e for e in desired}.values()),
    )


class Client:
    def __init__(self, params):
        url = urllib.parse.urlsplit(params["url"])
        if url.scheme != "https" or not url.hostname:
            raise XuudbError("url must be https://host:port, not %s" % params["url"])
        self.host, self.port, self.timeout = url.hostname, url.port or 443, params["timeout"]
        self.context = ssl.create_default_context(cafile=params["ca_file"])
        self.context.load_cert_chain(params["client_cert"], params["client_key"])

    def call(self, body):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=self.timeout)
        try:
            conn.request("POST", SERVICE, body=envelope(body),
                         headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise XuudbError("cannot reach the XUUDB admin service at https://%s:%s%s: %s"
                             % (self.host, self.port, SERVICE, exc))
        finally:
            conn.close()
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            raise XuudbError("HTTP %s from the XUUDB admin service: %s" % (resp.status, data[:500]))
        fault = root.find(".//{%s}Fault" % SOAP_NS)
        if fault is not None or resp.status != 200:
            text = fault.findtext("faultstring") if fault is not None else data[:500]
            raise XuudbError("the XUUDB refused the request (HTTP %s): %s. Is this host's certificate "
                             "DN in the XUUDB ACL file?" % (resp.status, text))
        return root

    def list(self):
        root = self.call('<x:ListDatabase xmlns:x="%s"/>' % NS)
        entries = []
        for db in root.iter("{%s}Database" % NS):
            values = {f: (db.findtext("{%s}%s" % (NS, f)) or "") for f in FIELDS}
            entries.append({"gcid": values["gcID"], "dn": values["Token"], "xlogin": values["xlogin"],
                            "role": values["role"], "projects": values["projects"]})
        return entries

    def replace(self, entries):
        body = '<x:ImportDatabase xmlns:x="%s" clean="true">%s</x:ImportDatabase>' % (
            NS, "".join(login_xml("Database", e) for e in entries))
        return self.call(body)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            client_cert=dict(type="path", required=True),
            client_key=dict(type="path", required=True, no_log=False),
            ca_file=dict(type="path", required=True),
            mappings=dict(type="list", elements="dict", required=True, options=dict(
                gcid=dict(type="str", required=True),
                dn=dict(type="str", required=True),
                xlogin=dict(type="str", required=True),
                role=dict(type="str", default="user"),
                projects=dict(type="str", default=""),
            )),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    try:
        desired = clean_mappings(module.params["mappings"])
    except XuudbError as exc:
        module.fail_json(msg=str(exc))
    try:
        client = Client(module.params)
        plan = compare(desired, client.list())
        result = dict(changed=plan["changed"], added=plan["added"], removed=plan["removed"],
                      diff=dict(before="\n".join(plan["have"]) + "\n", after="\n".join(plan["want"]) + "\n",
                                before_header="XUUDB", after_header="inventory"))
        if plan["changed"] and not module.check_mode:
            client.replace(plan["to_import"])
            after = case_blind_rows(client.list())
            if after != case_blind_rows(desired):
                module.fail_json(msg="the XUUDB does not hold the imported mappings afterwards: %s" % after, **result)
        result["count"] = len(plan["want"])
        module.exit_json(**result)
    except (XuudbError, OSError, ssl.SSLError) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
