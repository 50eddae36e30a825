"""The XUUDB mappings module (roles/unicore_xuudb/library/xuudb_mappings.py) without a server.

compare() decides from the mappings the XUUDB holds and those the inventory wants whether the
one clean import is needed; main() is run with a fake admin service in place of the SOAP client.
"""

import importlib.util
import json
from pathlib import Path

import pytest
from ansible.module_utils import basic

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("xuudb_mappings", ROOT / "roles/unicore_xuudb/library/xuudb_mappings.py")
xuudb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xuudb)


def mapping(dn, xlogin, gcid="cluster1", role="user", projects=""):
    return {"gcid": gcid, "dn": dn, "xlogin": xlogin, "role": role, "projects": projects}


ALICE = mapping("UID=alice,O=Site", "alice", projects="p1:p2")
BOB = mapping("UID=bob,O=Site", "bob")
ADMIN = mapping("UID=admin,O=Site", "ops", role="admin")


def test_equal_sets_need_no_import():
    plan = xuudb.compare([ALICE, BOB], [dict(ALICE), dict(BOB)])
    assert plan["changed"] is False
    assert plan["added"] == [] and plan["removed"] == []
    assert plan["want"] == plan["have"] == ["cluster1;UID=alice,O=Site;alice;user;p1:p2",
                                            "cluster1;UID=bob,O=Site;bob;user;"]


def test_order_does_not_matter():
    plan = xuudb.compare([ADMIN, ALICE, BOB], [BOB, ADMIN, ALICE])
    assert plan["changed"] is False and plan["added"] == plan["removed"] == []


def test_dns_compare_by_normalised_attribute_names_and_case_blind():
    stored = mapping("UID=Alice,O=SITE", "alice", projects="p1:p2")
    assert xuudb.compare([dict(ALICE, dn="uid=alice, o=Site")], [stored])["changed"] is False


@pytest.mark.parametrize("field, value", [
    ("xlogin", "alice2"), ("role", "admin"), ("projects", "p1"), ("gcid", "cluster2")])
def test_a_changed_field_replaces_the_mapping(field, value):
    wanted = dict(ALICE, **{field: value})
    plan = xuudb.compare([wanted, BOB], [ALICE, BOB])
    assert plan["changed"] is True
    assert plan["added"] == [xuudb.row(wanted)]
    assert plan["removed"] == [xuudb.row(ALICE)]
    assert plan["to_import"] == [wanted, BOB]


def test_an_entry_only_in_the_database_is_removed():
    plan = xuudb.compare([ALICE], [ALICE, BOB])
    assert plan["changed"] is True
    assert plan["added"] == [] and plan["removed"] == [xuudb.row(BOB)]
    assert plan["to_import"] == [ALICE]


def test_a_missing_entry_is_added_and_an_empty_inventory_empties_the_database():
    plan = xuudb.compare([ALICE, BOB], [ALICE])
    assert plan["changed"] is True and plan["added"] == [xuudb.row(BOB)] and plan["removed"] == []
    plan = xuudb.compare([], [ALICE])
    assert plan["changed"] is True and plan["removed"] == [xuudb.row(ALICE)] and plan["to_import"] == []


def test_duplicates_in_the_inventory_are_imported_once():
    duplicate = dict(ALICE, dn="uid=ALICE,o=Site")  # the same mapping, compared case-blind
    plan = xuudb.compare([ALICE, BOB, dict(ALICE), duplicate], [ALICE, BOB])
    assert plan["changed"] is False
    assert len(plan["to_import"]) == 2 and {e["xlogin"] for e in plan["to_import"]} == {"alice", "bob"}


def test_a_row_the_database_holds_twice_needs_the_import():
    plan = xuudb.compare([ALICE], [ALICE, dict(ALICE)])
    assert plan["changed"] is True and plan["added"] == plan["removed"] == []
    assert plan["have"] == [xuudb.row(ALICE)]


def test_clean_mappings_strips_and_refuses_incomplete_entries():
    cleaned = xuudb.clean_mappings([{"gcid": " cluster1 ", "dn": "UID=a ", "xlogin": "a", "role": "user",
                                     "projects": None}])
    assert cleaned == [mapping("UID=a", "a")]
    with pytest.raises(xuudb.XuudbError, match="every mapping needs gcid, dn and xlogin"):
        xuudb.clean_mappings([mapping("UID=a", " ")])


# ---- main(): the AnsibleModule interface, with a fake admin service -----------------------------
class FakeXuudb:
    """Stands in for Client: holds the database, records the imports."""

    def __init__(self, entries):
        self.entries = [dict(e) for e in entries]
        self.imports = []

    def __call__(self, params):
        return self

    def list(self):
        return [dict(e) for e in self.entries]

    def replace(self, entries):
        self.imports.append(entries)
        self.entries = [dict(e) for e in entries]


def run_main(monkeypatch, capsys, database, mappings, check_mode=False):
    args = {"url": "https://xuudb.example.org:34463", "client_cert": "/c.pem", "client_key": "/k.pem",
            "ca_file": "/ca.pem", "mappings": mappings, "_ansible_check_mode": check_mode}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    monkeypatch.setattr(xuudb, "Client", database)
    with pytest.raises(SystemExit):
        xuudb.main()
    return json.loads(capsys.readouterr().out)


def test_main_imports_only_when_the_database_differs(monkeypatch, capsys):
    database = FakeXuudb([ALICE])
    # role and projects take the module's defaults
    bob = {"gcid": "cluster1", "dn": "UID=bob,O=Site", "xlogin": "bob"}
    result = run_main(monkeypatch, capsys, database, [ALICE, bob])
    assert result["changed"] is True and result["added"] == [xuudb.row(BOB)] and result["removed"] == []
    assert result["count"] == 2 and database.imports == [[ALICE, BOB]]
    again = run_main(monkeypatch, capsys, database, [BOB, ALICE])
    assert again["changed"] is False and again["count"] == 2 and len(database.imports) == 1


def test_main_in_check_mode_reports_and_imports_nothing(monkeypatch, capsys):
    database = FakeXuudb([ALICE, BOB])
    result = run_main(monkeypatch, capsys, database, [ALICE], check_mode=True)
    assert result["changed"] is True and result["removed"] == [xuudb.row(BOB)] and database.imports == []


def test_main_fails_when_the_database_does_not_take_the_import(monkeypatch, capsys):
    database = FakeXuudb([])
    database.replace = lambda entries: None
    result = run_main(monkeypatch, capsys, database, [ALICE])
    assert result["failed"] is True and "does not hold the imported mappings afterwards" in result["msg"]


def test_main_refuses_an_incomplete_mapping_before_it_connects(monkeypatch, capsys):
    def no_client(params):
        raise AssertionError("connected although a mapping is incomplete")

    result = run_main(monkeypatch, capsys, no_client, [{"gcid": "cluster1", "dn": "UID=a", "xlogin": " "}])
    assert result["failed"] is True and "every mapping needs gcid, dn and xlogin" in result["msg"]
