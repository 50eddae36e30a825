#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Bring Unity IdM's users and OAuth clients to the inventory's state over its REST admin API."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: unity_idm_provision
short_description: Provision Unity IdM users and OAuth clients from the inventory, idempotently
description:
  - Reads Unity's entities in a few bulk calls of the REST admin API (members of C(/), of the
    users group and of the OAuth clients group, with their attributes), compares them with the
    requested users and clients and sends only the writes that change something. A second run
    sends no write and reports C(changed=false).
  - Entities are named by their C(userName) identity (the user name or the client_id).
  - A password or client secret is set only when its keyed hash, kept as attribute
    I(stamp_attribute) beside the entity, differs; Unity refuses to set the current password
    again, so a blind "set password" would fail on every second run.
  - Users the module provisioned are members of I(users_group). Members of that group that are
    no longer requested are disabled (status C(disabled)), not removed, and their OAuth access and
    refresh tokens are revoked (a disabled entity's access tokens would otherwise stay valid until
    they expire). Clients the module made carry the stamp in the clients group and are disabled
    alike. Entities back in the request are enabled again.
  - Runs on the Unity host; the REST admin endpoint must verify against I(ca_path).
  - Check mode reads, plans and reports, and writes nothing.
options:
  url:
    description: Base URL of the REST admin API, e.g. C(https://idm.example.org:2443/rest-admin/v1).
    type: str
    required: true
  admin_user:
    description: User name of an administrator (role System Manager).
    type: str
    required: true
  admin_password:
    description: Password of that administrator.
    type: str
    required: true
  provisioning_url:
    description:
      - Base URL of a second REST admin endpoint that authenticates I(provisioner) only, with a
        credential that is cheap to check (see I(provisioner_credential)). Every request then
        costs milliseconds instead of a scrypt check of the administrator's password.
      - When the provisioner cannot log in there (first run, or its secret changed), the module
        creates or repairs it through I(url) with the administrator's password, then uses it.
      - Empty: every request goes to I(url) as the administrator.
    type: str
    default: ""
  provisioner:
    description: User name of the provisioning account (role System Manager).
    type: str
    default: ihpc-provisioner
  provisioner_secret:
    description: Secret of the provisioning account.
    type: str
    default: ""
  provisioner_credential:
    description: Unity credential that holds the provisioner's secret.
    type: str
    default: ihpcProvisioningSecret
  provisioner_requirement:
    description: Credential requirement of the provisioning account (contains only I(provisioner_credential)).
    type: str
    default: provisioning
  ca_path:
    description: CA bundle that verifies Unity's TLS certificate.
    type: path
    required: true
  timeout:
    description: Seconds per HTTP request.
    type: int
    default: 120
  users:
    description: The users; every other member of I(users_group) is disabled.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Login name (userName identity)., type: str, required: true}
      password: {description: Password., type: str, required: true, no_log: true}
      email: {description: E-mail address (attribute C(email) in C(/), confirmed)., type: str, default: ""}
  clients:
    description: The OAuth clients (confidential, authenticated with their secret).
    type: list
    elements: dict
    default: []
    suboptions:
      client_id: {description: Client id (userName identity)., type: str, required: true}
      secret: {description: Client secret., type: str, required: true, no_log: true}
      name: {description: Name shown to users., type: str, default: ""}
      redirect_uris: {description: Allowed redirect URIs (exact match)., type: list, elements: str, required: true}
      grant_flows:
        description: Allowed grant flows (Unity names).
        type: list
        elements: str
        default: [authorizationCode]
  stamp_key:
    description: Secret key of the password stamps (kept on the controller).
    type: str
    required: true
  users_group:
    description: Group that records the users this module provisioned.
    type: str
    default: /ihpc-users
  clients_group:
    description: Unity's OAuth clients group (C(unity.oauth2.as.clientsGroup)).
    type: str
    default: /oauth-clients
  stamp_attribute:
    description: Name of the stamp attribute type (created when missing).
    type: str
    default: ihpcProvisionStamp
  credential_requirement:
    description: Credential requirement of new entities (must contain C(sys:password)).
    type: str
    default: password
author:
  - ihpc deployment bundle
"""

EXAMPLES = r"""
- name: Provision users and the hub's client
  unity_idm_provision:
    url: https://idm.example.org:2443/rest-admin/v1
    admin_user: admin
    admin_password: "{{ unity_admin_password }}"
    ca_path: /etc/ihpc/pki/ca.pem
    stamp_key: "{{ stamp_key }}"
    users:
      - {name: alice, password: "{{ alice_password }}"}
    clients:
      - client_id: jupyterhub
        secret: "{{ hub_secret }}"
        name: JupyterHub
        redirect_uris: [https://hub.example.org/hub/oauth_callback]
"""

RETURN = r"""
operations:
  description: What was (or in check mode would be) done, by operation; each entry names the entity.
  type: dict
  returned: always
  sample: {create: [user alice], passwords: [user alice], disable: [user carol]}
requests:
  description: Number of HTTP requests sent (reads and writes).
  type: int
  returned: always
"""

import base64
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule

STAMP_VERSION = "v1"
OPERATIONS = ("provisioner", "attribute_type", "groups", "create", "add_to_group", "enable", "passwords",
              "attributes", "remove_attributes", "disable")


class UnityError(Exception):
    pass


def stamp(secret, key, kind, name):
    """Keyed SHA-256 of a password: shows "set by us, unchanged" and reveals nothing without the key."""
    return hashlib.sha256(":".join([STAMP_VERSION, key, kind, name, secret]).encode("utf-8")).hexdigest()


def members_by_name(payload):
    """/group-members-attributes JSON -> {userName: {state, attributes{name: values}}}."""
    result = {}
    for member in payload or []:
        attrs = {a.get("name"): a.get("values", []) for a in member.get("attributes") or []}
        entity = member.get("entityInformation") or {}
        info = {"state": entity.get("state"), "id": entity.get("entityId"), "attributes": attrs}
        for ident in member.get("identities") or []:
            if ident.get("typeId") == "userName":
                result[ident.get("value")] = info
    return result


def email_value(address):
    return json.dumps({"value": address, "tags": [],
                       "confirmationData": {"confirmed": True, "confirmationDate": 0, "sentRequestAmount": 0}},
                      separators=(",", ":"))


def email_addresses(values):
    out = []
    for value in values or []:
        try:
            parsed = json.loads(value)
        except (TypeError, ValueError):
            continue
        out.append((parsed.get("value"), bool((parsed.get("confirmationData") or {}).get("confirmed"))))
    return out


def plan(users, clients, root, managed_users, client_entities, key, users_group, clients_group, stamp_attr):
    """Operations that bring the entities to the requested state (pure function, no I/O)."""
    ops = {op: [] for op in OPERATIONS}

    def ensure(name, kind, group, members):
        if name not in root:
            ops["create"].append({"name": name, "kind": kind})
        if name not in members:
            ops["add_to_group"].append({"name": name, "kind": kind, "group": group})
        if name in root and root[name]["state"] != "valid":
            ops["enable"].append({"name": name, "kind": kind, "state": root[name]["state"]})

    for user in users:
        name = user["name"]
        ensure(name, "user", users_group, managed_users)
        current = managed_users.get(name, {}).get("attributes", {})
        attributes = []
        wanted_stamp = stamp(user["password"], key, "user", name)
        if current.get(stamp_attr, [])[:1] != [wanted_stamp]:
            ops["passwords"].append({"name": name, "kind": "user", "password": user["password"]})
            attributes.append({"name": stamp_attr, "groupPath": users_group, "values": [wanted_stamp]})
        email = user.get("email") or ""
        emails = email_addresses(root.get(name, {}).get("attributes", {}).get("email"))
        if email and emails != [(email, True)]:
            attributes.append({"name": "email", "groupPath": "/", "values": [email_value(email)]})
        elif not email and emails and name in managed_users:
            ops["remove_attributes"].append({"name": name, "kind": "user", "attribute": "email", "group": "/"})
        if attributes:
            ops["attributes"].append({"name": name, "kind": "user", "attributes": attributes})

    for client in clients:
        name = client["client_id"]
        ensure(name, "client", clients_group, client_entities)
        current = client_entities.get(name, {}).get("attributes", {})
        wanted = {
            "sys:oauth:allowedReturnURI": list(client["redirect_uris"]),
            "sys:oauth:allowedGrantFlows": list(client.get("grant_flows") or ["authorizationCode"]),
            "sys:oauth:clientName": [client.get("name") or name],
            "sys:oauth:clientType": ["CONFIDENTIAL"],
        }
        attributes = [{"name": attr, "groupPath": clients_group, "values": values}
                      for attr, values in wanted.items() if current.get(attr) != values]
        wanted_stamp = stamp(client["secret"], key, "client", name)
        if current.get(stamp_attr, [])[:1] != [wanted_stamp]:
            ops["passwords"].append({"name": name, "kind": "client", "password": client["secret"]})
            attributes.append({"name": stamp_attr, "groupPath": clients_group, "values": [wanted_stamp]})
        if attributes:
            ops["attributes"].append({"name": name, "kind": "client", "attributes": attributes})

    wanted_users = {u["name"] for u in users}
    for name, info in sorted(managed_users.items()):
        if name not in wanted_users and info["state"] != "disabled":
            ops["disable"].append({"name": name, "kind": "user"})
    wanted_clients = {c["client_id"] for c in clients}
    for name, info in sorted(client_entities.items()):
        if name not in wanted_clients and stamp_attr in info["attributes"] and info["state"] != "disabled":
            ops["disable"].append({"name": name, "kind": "client"})
    return ops


class Unity:
    def __init__(self, base, user, password, ca_path, timeout):
        self.base = base.rstrip("/")
        self.timeout = timeout
        token = "%s:%s" % (user, password)
        self.auth = "Basic " + base64.b64encode(token.encode("utf-8")).decode("ascii")
        self.context = ssl.create_default_context(cafile=ca_path)
        self.requests = 0

    def call(self, method, path, query=None, body=None, accept=(200, 204)):
        """One REST call; returns (status, parsed JSON or None, error name)."""
        url = self.base + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", self.auth)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                status, text = response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise UnityError("%s %s: %s" % (method, path, exc))
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        if status not in accept:
            message = payload.get("message") if isinstance(payload, dict) else text[:300]
            raise UnityError("%s %s answered %s: %s (%s)" % (method, path, status, message, error))
        return status, payload, error


def group_path(group):
    return urllib.parse.quote(group, safe="")


def first_call(unity, path, wait=60):
    """The first request after a start: the REST endpoint may still be deploying (up to a minute).
    Returns the status; 401/403 (not logged in) are answers, not errors."""
    deadline = time.monotonic() + wait
    while True:
        try:
            status, _, _ = unity.call("GET", path, accept=(200, 401, 403, 404, 503))
        except UnityError:
            if time.monotonic() > deadline:
                raise
            status = None
        if status in (200, 401, 403):
            return status
        if time.monotonic() > deadline:
            raise UnityError("GET %s%s: the REST endpoint is not available (%s)" % (unity.base, path, status))
        time.sleep(3)


def provisioner_client(module, admin, ops_done):
    """A client logged in as the provisioning account, made or repaired by the administrator if needed."""
    params = module.params
    name, secret = params["provisioner"], params["provisioner_secret"]
    fast = Unity(params["provisioning_url"], name, secret, params["ca_path"], params["timeout"])
    try:
        status = first_call(fast, "/resolve/userName/%s" % group_path(name))
    except UnityError:
        # In --check, a configuration that adds the endpoint may not have been applied yet.
        if not module.check_mode:
            raise
        status = None
    if status == 200:
        return fast, admin.requests + fast.requests
    ops_done["provisioner"].append({"name": name, "kind": "provisioning account"})
    if module.check_mode:
        return admin, admin.requests + fast.requests
    status, entity, _ = admin.call("GET", "/resolve/userName/%s" % group_path(name), accept=(200, 400))
    if status != 200:
        admin.call("POST", "/entity/identity/userName/%s" % group_path(name),
                   query={"credentialRequirement": params["provisioner_requirement"]}, accept=(200,))
    admin.call("PUT", "/entity/%s/credential-adm/%s" % (group_path(name), group_path(params["provisioner_credential"])),
               query={"identityType": "userName"}, body={"password": secret})
    admin.call("PUT", "/entity/%s/attribute" % group_path(name), query={"identityType": "userName"},
               body={"name": "sys:AuthorizationRole", "groupPath": "/", "values": ["System Manager"]})
    if status == 200 and (entity.get("entityInformation") or {}).get("state") != "valid":
        admin.call("PUT", "/entity/%s/status/valid" % group_path(name), query={"identityType": "userName"})
    status, _, _ = fast.call("GET", "/resolve/userName/%s" % group_path(name), accept=(200, 401, 403))
    if status != 200:
        raise UnityError("the provisioning account %s still cannot log in at %s (%s)"
                         % (name, params["provisioning_url"], status))
    return fast, admin.requests + fast.requests


def run(module):
    params = module.params
    admin = Unity(params["url"], params["admin_user"], params["admin_password"], params["ca_path"], params["timeout"])
    users_group, clients_group = params["users_group"], params["clients_group"]
    stamp_attr = params["stamp_attribute"]
    ops_done = {op: [] for op in OPERATIONS}
    setup_requests = 0
    if params["provisioning_url"]:
        unity, setup_requests = provisioner_client(module, admin, ops_done)
    else:
        unity = admin
        if first_call(unity, "/attributeTypes") != 200:
            raise UnityError("the administrator %s cannot log in at %s" % (params["admin_user"], params["url"]))

    # Structure: the stamp attribute type and the two groups.
    _, types, _ = unity.call("GET", "/attributeTypes")
    if stamp_attr not in {t.get("name") for t in types or []}:
        ops_done["attribute_type"].append({"name": stamp_attr, "kind": "attribute type"})
    _, root_group, _ = unity.call("GET", "/group/%2F")
    for group in (clients_group, users_group):
        if group not in (root_group or {}).get("subGroups", []):
            status, _, _ = unity.call("GET", "/group/%s/meta" % group_path(group), accept=(200, 400))
            if status != 200:
                ops_done["groups"].append({"name": group, "kind": "group"})
    if not module.check_mode:
        for item in ops_done["attribute_type"]:
            unity.call("POST", "/attributeType", body={
                "name": stamp_attr, "syntaxId": "string",
                "displayedName": {"Map": {"en": "Provisioning stamp"}, "DefaultValue": stamp_attr},
                "i18nDescription": {"Map": {"en": "Keyed hash of the password or secret last set from the site inventory"},
                                    "DefaultValue": None},
                "syntaxState": {"regexp": "", "minLength": 64, "maxLength": 64, "editWithTextArea": False},
                "minElements": 1, "maxElements": 1, "uniqueValues": False, "selfModificable": False,
                "global": False, "flags": 0, "metadata": {}})
        for item in ops_done["groups"]:
            unity.call("POST", "/group/%s" % group_path(item["name"]), query={"withParents": "true"})

    # Entities, in bulk: everybody is a member of "/".
    _, root, _ = unity.call("GET", "/group-members-attributes/%2F", query={"attributes": ["email"]})
    groups_missing = {g["name"] for g in ops_done["groups"]}
    managed = []
    if users_group not in groups_missing or not module.check_mode:
        _, managed, _ = unity.call("GET", "/group-members-attributes/%s" % group_path(users_group),
                                   query={"attributes": [stamp_attr]})
    clients = []
    if clients_group not in groups_missing or not module.check_mode:
        _, clients, _ = unity.call("GET", "/group-members-attributes/%s" % group_path(clients_group))

    root_by_name = members_by_name(root)
    todo = plan(params["users"], params["clients"], root_by_name, members_by_name(managed),
                members_by_name(clients), params["stamp_key"], users_group, clients_group, stamp_attr)
    for op, entries in todo.items():
        ops_done[op].extend(entries)

    if not module.check_mode:
        requirement = params["credential_requirement"]
        for item in todo["create"]:
            unity.call("POST", "/entity/identity/userName/%s" % group_path(item["name"]),
                       query={"credentialRequirement": requirement}, accept=(200,))
        for item in todo["add_to_group"]:
            unity.call("POST", "/group/%s/entity/%s" % (group_path(item["group"]), group_path(item["name"])),
                       query={"identityType": "userName"})
        for item in todo["enable"]:
            unity.call("PUT", "/entity/%s/status/valid" % group_path(item["name"]), query={"identityType": "userName"})
        for item in todo["passwords"]:
            # "Recently used" means the password is already the requested one (a run that stopped
            # before it wrote the stamp); the stamp below records it.
            status, _, error = unity.call(
                "PUT", "/entity/%s/credential-adm/sys:password" % group_path(item["name"]),
                query={"identityType": "userName"}, body={"password": item["password"]}, accept=(200, 204, 400))
            if status == 400 and error != "CredentialRecentlyUsedException":
                raise UnityError("setting the password of %s %s was refused: %s (Unity's password policy: "
                                 "about 8 orders of magnitude of guesses, i.e. no short or common words)"
                                 % (item["kind"], item["name"], error))
        for item in todo["attributes"]:
            unity.call("PUT", "/entity/%s/attributes" % group_path(item["name"]),
                       query={"identityType": "userName"}, body=item["attributes"])
        for item in todo["remove_attributes"]:
            unity.call("DELETE", "/entity/%s/attribute/%s" % (group_path(item["name"]), item["attribute"]),
                       query={"identityType": "userName", "group": item["group"]})
        for item in todo["disable"]:
            unity.call("PUT", "/entity/%s/status/disabled" % group_path(item["name"]),
                       query={"identityType": "userName"})
        if todo["disable"]:
            # A disabled entity cannot log in or refresh, but access tokens it already holds stay
            # valid until they expire: revoke them, so that leaving the inventory takes effect now.
            owners = {root_by_name[i["name"]]["id"] for i in todo["disable"] if i["name"] in root_by_name}
            _, tokens, _ = unity.call("GET", "/tokens")
            for token in tokens or []:
                if token.get("owner") in owners and token.get("type") in ("oauth2Access", "oauth2Refresh"):
                    unity.call("DELETE", "/token/%s/%s" % (group_path(token["type"]), group_path(token["value"])),
                               accept=(200, 204, 400))

    summary = {op: ["%s %s" % (e["kind"], e["name"]) for e in entries] for op, entries in ops_done.items() if entries}
    changed = bool(summary)
    result = {"changed": changed, "operations": summary, "requests": setup_requests + unity.requests}
    if module._diff and changed:
        result["diff"] = {
            "before_header": "Unity (%s)" % params["url"],
            "after_header": "Unity after provisioning",
            "before": "",
            "after": "".join("%s: %s\n" % (op, ", ".join(names)) for op, names in sorted(summary.items())),
        }
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            admin_user=dict(type="str", required=True),
            admin_password=dict(type="str", required=True, no_log=True),
            ca_path=dict(type="path", required=True),
            timeout=dict(type="int", default=120),
            provisioning_url=dict(type="str", default=""),
            provisioner=dict(type="str", default="ihpc-provisioner"),
            provisioner_secret=dict(type="str", default="", no_log=True),
            provisioner_credential=dict(type="str", default="ihpcProvisioningSecret"),
            provisioner_requirement=dict(type="str", default="provisioning"),
            users=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", required=True, no_log=True),
                email=dict(type="str", default=""),
            )),
            clients=dict(type="list", elements="dict", default=[], options=dict(
                client_id=dict(type="str", required=True),
                secret=dict(type="str", required=True, no_log=True),
                name=dict(type="str", default=""),
                redirect_uris=dict(type="list", elements="str", required=True),
                grant_flows=dict(type="list", elements="str", default=["authorizationCode"]),
            )),
            stamp_key=dict(type="str", required=True, no_log=True),
            users_group=dict(type="str", default="/ihpc-users"),
            clients_group=dict(type="str", default="/oauth-clients"),
            stamp_attribute=dict(type="str", default="ihpcProvisionStamp"),
            credential_requirement=dict(type="str", default="password"),
        ),
        supports_check_mode=True,
    )
    if module.params["provisioning_url"] and not module.params["provisioner_secret"]:
        module.fail_json(msg="provisioning_url needs provisioner_secret")
    try:
        module.exit_json(**run(module))
    except UnityError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
