"""The hub's spawn form and its check of start requests (roles/jupyterhub/files/ihpc_options.py).

Pure functions of the hub's site.json; no hub or container needed. The same check runs for
form posts and for REST API starts, so a request that is refused here never reaches UNICORE.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ihpc_options", ROOT / "roles/jupyterhub/files/ihpc_options.py")
opts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(opts)

SETTINGS = {
    "systems": {
        "c1": {"display_name": "Cluster One", "login_node": True,
               "partitions": [{"name": "batch", "default": True, "max_nodes": 2, "max_runtime_minutes": 60},
                              {"name": "open"}]},
        "c2": {"display_name": "Cluster Two", "login_node": False,
               "partitions": [{"name": "gpu", "max_nodes": 1, "max_runtime_minutes": 30}]},
    },
    "users": {
        "alice": {"c1": {"projects": ["p1", "p2"]}, "c2": {"projects": []}},
        "bob": {"c1": {"projects": []}},
        "carol": {},
    },
}


def ok(user, **options):
    return opts.validate_options(SETTINGS, user, options)


def refused(user, **options):
    with pytest.raises(opts.OptionsError) as e:
        opts.validate_options(SETTINGS, user, options)
    return str(e.value)


def test_form_offers_only_the_users_systems_with_their_limits():
    bob = opts.render_form(SETTINGS, "bob")
    assert 'value="c1|login"' in bob and 'value="c1|batch"' in bob
    assert "up to 2 nodes, up to 60 min" in bob
    assert "c2|" not in bob and "Cluster Two" not in bob
    alice = opts.render_form(SETTINGS, "alice")
    assert 'value="c2|gpu"' in alice and "c2|login" not in alice  # c2 offers no login node
    assert 'value="c1|p1"' in alice and 'value="c1|p2"' in alice


def test_form_for_an_unmapped_user_says_so():
    assert "not mapped to any HPC system" in opts.render_form(SETTINGS, "carol")
    assert "not mapped to any HPC system" in opts.render_form(SETTINGS, "nobody")


def test_valid_choices_from_the_form_and_from_the_api():
    assert ok("bob", target=["c1|login"]) == {"system": "c1", "target": "login"}
    assert ok("bob", target=["c1|batch"], nodes=["2"], runtime=["60"]) == \
        {"system": "c1", "target": "batch", "nodes": 2, "runtime": 60}
    assert ok("alice", system="c1", target="batch", nodes=1, runtime=5, project="p2")["project"] == "p2"
    # the form sends project "<system>|<project>"; the first project is the default
    assert ok("alice", target=["c1|batch"], nodes=["1"], runtime=["5"], project=["c1|p2"])["project"] == "p2"
    assert ok("alice", target=["c1|batch"], nodes=["1"], runtime=["5"])["project"] == "p1"
    # a partition without limits accepts any positive values
    assert ok("bob", target=["c1|open"], nodes=["7"], runtime=["900"])["nodes"] == 7


@pytest.mark.parametrize("options, message", [
    ({"target": ["c1|batch"], "nodes": ["3"], "runtime": ["10"]}, "allows 1 to 2 nodes, not 3"),
    ({"target": ["c1|batch"], "nodes": ["0"], "runtime": ["10"]}, "allows 1 to 2 nodes, not 0"),
    ({"target": ["c1|batch"], "nodes": ["1"], "runtime": ["61"]}, "runtime of 1 to 60 minutes, not 61"),
    ({"target": ["c1|batch"], "nodes": ["1"], "runtime": ["-5"]}, "Runtime must be a whole number"),
    ({"target": ["c1|batch"], "nodes": ["1.5"], "runtime": ["5"]}, "Nodes must be a whole number"),
    ({"target": ["c1|batch"], "nodes": ["1; scancel -u bob"], "runtime": ["5"]}, "Nodes must be a whole number"),
    ({"target": ["c1|batch; rm -rf ~"]}, "offers no"),
    ({"target": ["c9|login"]}, "There is no HPC system 'c9'"),
    ({"target": ["c2|gpu"], "nodes": ["1"], "runtime": ["5"]}, "bob has no account on Cluster Two (c2)"),
    ({"system": "c2", "target": "gpu"}, "bob has no account on Cluster Two (c2)"),
    ({}, "Choose an HPC system"),
    ({"target": ["c1|batch"], "nodes": ["1"], "runtime": ["5"], "project": ["c1|p1"]}, "no projects on Cluster One"),
])
def test_refused_before_anything_is_submitted(options, message):
    assert message in refused("bob", **options)


def test_projects_and_login_nodes_are_checked_per_system():
    assert "not one of your projects" in refused("alice", target=["c1|batch"], nodes=["1"], runtime=["5"],
                                                 project=["c1|p9"])
    assert "offers no 'login'" in refused("alice", target=["c2|login"])
    assert "carol has no account" in refused("carol", target=["c1|login"])
