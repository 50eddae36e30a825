"""The planning step of the Unity provisioning module (roles/unity_idm/library/unity_idm_provision.py).

plan() compares Unity's entities, as members_by_name() reads them from the REST admin API's
bulk answers, with the inventory's users and clients and returns the writes; no Unity needed.
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("unity_idm_provision",
                                               ROOT / "roles/unity_idm/library/unity_idm_provision.py")
unity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(unity)

KEY = "stamp-key"
USERS_GROUP = "/ihpc-users"
CLIENTS_GROUP = "/oauth-clients"
STAMP = "ihpcProvisionStamp"
HUB_URI = "https://hub.example.org/hub/oauth_callback"


def member(name, entity_id, state="valid", attributes=None):
    """One entry of /group-members-attributes/<group>, as Unity answers it."""
    return {
        "entityInformation": {"entityId": entity_id, "state": state},
        "identities": [{"typeId": "persistent", "value": "p-%s" % entity_id}, {"typeId": "userName", "value": name}],
        "attributes": [{"name": attr, "values": values} for attr, values in (attributes or {}).items()],
    }


def user(name, password="", email=""):
    return {"name": name, "password": password or "pw-" + name, "email": email}


def hub_client(secret="hub-secret", uris=(HUB_URI,)):
    return {"client_id": "jupyterhub", "secret": secret, "name": "JupyterHub",
            "redirect_uris": list(uris), "grant_flows": ["authorizationCode"]}


def user_stamp(u):
    return unity.stamp(u["password"], KEY, "user", u["name"])


def provisioned_client(client, entity_id=20, state="valid", **changes):
    """A client as the module leaves it in the clients group."""
    attributes = {
        "sys:oauth:allowedReturnURI": list(client["redirect_uris"]),
        "sys:oauth:allowedGrantFlows": list(client["grant_flows"]),
        "sys:oauth:clientName": [client["name"]],
        "sys:oauth:clientType": ["CONFIDENTIAL"],
        STAMP: [unity.stamp(client["secret"], KEY, "client", client["client_id"])],
    }
    attributes.update(changes)
    return member(client["client_id"], entity_id, state, attributes)


def planned(users=(), clients=(), root=(), managed=(), client_members=()):
    """plan() on Unity's bulk answers; only the operations with entries."""
    ops = unity.plan(list(users), list(clients), unity.members_by_name(list(root)),
                     unity.members_by_name(list(managed)), unity.members_by_name(list(client_members)),
                     KEY, USERS_GROUP, CLIENTS_GROUP, STAMP)
    assert set(ops) == set(unity.OPERATIONS)
    return {op: entries for op, entries in ops.items() if entries}


def provisioned_user(u, entity_id, state="valid"):
    """Root and managed-group entries of a user as the module leaves it."""
    root_attrs = {"email": [unity.email_value(u["email"])]} if u["email"] else {}
    return (member(u["name"], entity_id, state, root_attrs),
            member(u["name"], entity_id, state, {STAMP: [user_stamp(u)]}))


# ---- users -----------------------------------------------------------------------------------------
def test_a_new_user_is_created_put_in_the_group_and_given_password_stamp_and_email():
    alice = user("alice", email="alice@example.org")
    ops = planned(users=[alice])
    assert ops.pop("create") == [{"name": "alice", "kind": "user"}]
    assert ops.pop("add_to_group") == [{"name": "alice", "kind": "user", "group": USERS_GROUP}]
    assert ops.pop("passwords") == [{"name": "alice", "kind": "user", "password": "pw-alice"}]
    assert ops.pop("attributes") == [{"name": "alice", "kind": "user", "attributes": [
        {"name": STAMP, "groupPath": USERS_GROUP, "values": [user_stamp(alice)]},
        {"name": "email", "groupPath": "/", "values": [unity.email_value("alice@example.org")]},
    ]}]
    assert ops == {}


def test_an_unchanged_user_needs_no_write():
    alice, bob = user("alice", email="alice@example.org"), user("bob")
    (root_a, managed_a), (root_b, managed_b) = provisioned_user(alice, 1), provisioned_user(bob, 2)
    assert planned(users=[alice, bob], root=[root_a, root_b], managed=[managed_a, managed_b]) == {}


def test_a_changed_password_is_set_with_its_new_stamp():
    old = user("alice", password="old-secret")
    root, managed = provisioned_user(old, 1)
    new = user("alice", password="new-secret")
    ops = planned(users=[new], root=[root], managed=[managed])
    assert ops == {
        "passwords": [{"name": "alice", "kind": "user", "password": "new-secret"}],
        "attributes": [{"name": "alice", "kind": "user",
                        "attributes": [{"name": STAMP, "groupPath": USERS_GROUP, "values": [user_stamp(new)]}]}],
    }


def test_a_user_removed_from_the_inventory_is_disabled_once():
    alice, carol = user("alice"), user("carol")
    root_a, managed_a = provisioned_user(alice, 1)
    root_c, managed_c = provisioned_user(carol, 3)
    assert planned(users=[alice], root=[root_a, root_c], managed=[managed_a, managed_c]) == \
        {"disable": [{"name": "carol", "kind": "user"}]}
    root_c, managed_c = provisioned_user(carol, 3, state="disabled")
    assert planned(users=[alice], root=[root_a, root_c], managed=[managed_a, managed_c]) == {}


def test_a_user_outside_the_managed_group_is_left_alone():
    others = [member("admin", 1), member("someone", 2, attributes={"email": [unity.email_value("s@example.org")]})]
    assert planned(root=others) == {}


def test_a_disabled_user_back_in_the_inventory_is_enabled():
    carol = user("carol")
    root, managed = provisioned_user(carol, 3, state="disabled")
    assert planned(users=[carol], root=[root], managed=[managed]) == \
        {"enable": [{"name": "carol", "kind": "user", "state": "disabled"}]}


def test_an_existing_entity_joins_the_group_and_gets_its_password():
    alice = user("alice")
    ops = planned(users=[alice], root=[member("alice", 1)])
    assert "create" not in ops
    assert ops["add_to_group"] == [{"name": "alice", "kind": "user", "group": USERS_GROUP}]
    assert ops["passwords"] == [{"name": "alice", "kind": "user", "password": "pw-alice"}]


def test_email_is_set_when_changed_or_unconfirmed_and_removed_when_dropped():
    alice = user("alice", email="alice@example.org")
    root, managed = provisioned_user(user("alice", email="old@example.org"), 1)
    email_write = {"name": "alice", "kind": "user", "attributes": [
        {"name": "email", "groupPath": "/", "values": [unity.email_value("alice@example.org")]}]}
    assert planned(users=[alice], root=[root], managed=[managed]) == {"attributes": [email_write]}
    unconfirmed = '{"value":"alice@example.org","confirmationData":{"confirmed":false}}'
    root = member("alice", 1, attributes={"email": [unconfirmed]})
    assert planned(users=[alice], root=[root], managed=[managed]) == {"attributes": [email_write]}
    assert planned(users=[user("alice")], root=[root], managed=[managed]) == \
        {"remove_attributes": [{"name": "alice", "kind": "user", "attribute": "email", "group": "/"}]}


# ---- clients ---------------------------------------------------------------------------------------
def test_a_new_client_is_created_with_its_oauth_attributes_and_secret():
    hub = hub_client()
    ops = planned(clients=[hub])
    assert ops.pop("create") == [{"name": "jupyterhub", "kind": "client"}]
    assert ops.pop("add_to_group") == [{"name": "jupyterhub", "kind": "client", "group": CLIENTS_GROUP}]
    assert ops.pop("passwords") == [{"name": "jupyterhub", "kind": "client", "password": "hub-secret"}]
    [write] = ops.pop("attributes")
    assert ops == {}
    assert write["name"] == "jupyterhub" and write["kind"] == "client"
    assert {a["name"]: a["values"] for a in write["attributes"]} == {
        "sys:oauth:allowedReturnURI": [HUB_URI],
        "sys:oauth:allowedGrantFlows": ["authorizationCode"],
        "sys:oauth:clientName": ["JupyterHub"],
        "sys:oauth:clientType": ["CONFIDENTIAL"],
        STAMP: [unity.stamp("hub-secret", KEY, "client", "jupyterhub")],
    }
    assert {a["groupPath"] for a in write["attributes"]} == {CLIENTS_GROUP}


def test_an_unchanged_client_needs_no_write():
    hub = hub_client()
    assert planned(clients=[hub], root=[member("jupyterhub", 20)], client_members=[provisioned_client(hub)]) == {}


def test_a_changed_secret_or_redirect_uri_writes_only_that():
    hub = hub_client()
    current = dict(root=[member("jupyterhub", 20)], client_members=[provisioned_client(hub)])
    ops = planned(clients=[hub_client(secret="new-secret")], **current)
    assert ops["passwords"] == [{"name": "jupyterhub", "kind": "client", "password": "new-secret"}]
    assert [a["name"] for a in ops["attributes"][0]["attributes"]] == [STAMP]
    uri = "https://hub2.example.org/hub/oauth_callback"
    ops = planned(clients=[hub_client(uris=[HUB_URI, uri])], **current)
    assert ops == {"attributes": [{"name": "jupyterhub", "kind": "client", "attributes": [
        {"name": "sys:oauth:allowedReturnURI", "groupPath": CLIENTS_GROUP, "values": [HUB_URI, uri]}]}]}


def test_a_client_removed_from_the_inventory_is_disabled_but_foreign_clients_are_left_alone():
    hub = hub_client()
    foreign = member("other-app", 21, attributes={"sys:oauth:clientType": ["CONFIDENTIAL"]})
    root = [member("jupyterhub", 20), member("other-app", 21)]
    assert planned(root=root, client_members=[provisioned_client(hub), foreign]) == \
        {"disable": [{"name": "jupyterhub", "kind": "client"}]}
    assert planned(root=root, client_members=[provisioned_client(hub, state="disabled"), foreign]) == {}


# ---- reading Unity's answers ----------------------------------------------------------------------
def test_members_are_named_by_their_username_identity():
    nameless = {"entityInformation": {"entityId": 9, "state": "valid"},
                "identities": [{"typeId": "persistent", "value": "p-9"}], "attributes": []}
    by_name = unity.members_by_name([member("alice", 1, attributes={STAMP: ["x"]}), nameless])
    assert by_name == {"alice": {"state": "valid", "id": 1, "attributes": {STAMP: ["x"]}}}
    assert unity.members_by_name(None) == {}


def test_the_stamp_depends_on_secret_key_kind_and_name_and_hides_the_secret():
    base = unity.stamp("secret", KEY, "user", "alice")
    assert len(base) == 64 and "secret" not in base
    assert base == unity.stamp("secret", KEY, "user", "alice")
    assert len({base, unity.stamp("other", KEY, "user", "alice"), unity.stamp("secret", "k2", "user", "alice"),
                unity.stamp("secret", KEY, "client", "alice"), unity.stamp("secret", KEY, "user", "bob")}) == 5
