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


def test_the_form_preselects_the_last_start_and_fills_in_its_values_per_partition():
    last_jobs = [
        {"options": {"system": "c1", "target": "batch", "nodes": 2, "runtime": 45, "project": "p2"},
         "requested": "2026-01-01T10:00:00Z"},
        {"options": {"system": "c2", "target": "gpu", "nodes": 1, "runtime": 20}, "requested": "2026-01-02T10:00:00Z"},
        {"options": {"system": "c1", "target": "batch", "nodes": 1, "runtime": 30, "project": "p1"},
         "requested": "2025-12-01T10:00:00Z"},
        {},
    ]
    remembered = opts.remembered_choices(last_jobs)
    # The newest start overall is pre-selected; per partition, its newest values.
    assert remembered["choice"] == "c2|gpu"
    assert remembered["per_target"]["c1|batch"] == {"nodes": 2, "runtime": 45, "project": "p2"}
    form = opts.render_form(SETTINGS, "alice", remembered)
    assert 'value="c2|gpu" data-system="c2" data-batch="1" data-max-nodes="1" data-max-runtime="30" ' \
           'data-last-nodes="1" data-last-runtime="20" selected' in form
    assert 'data-last-nodes="2" data-last-project="p2" data-last-runtime="45"' in form
    assert form.count(" selected") == 1
    # A remembered choice the user may no longer make is not pre-selected: the first option is.
    form = opts.render_form(SETTINGS, "bob", remembered)
    assert 'value="c1|login" data-system="c1" data-batch="0" selected' in form


def test_the_form_offers_a_name_for_a_new_named_lab_and_shows_the_name_of_a_named_one():
    form = opts.render_form(SETTINGS, "alice", None, "", named_servers=True)
    assert 'id="ihpc-name"' in form and 'encodeURIComponent("alice")' in form
    # The name field has no name attribute: it is not a start option, it changes the form's URL.
    assert 'name="name"' not in form
    named = opts.render_form(SETTINGS, "alice", None, "analysis", named_servers=True)
    assert 'id="ihpc-name"' not in named and '<strong id="ihpc-lab-name">analysis</strong>' in named
    # A user name cannot break out of the script.
    assert "</script>x" not in opts.render_form({**SETTINGS, "users": {"</script>x": {"c1": {}}}}, "</script>x",
                                                None, "", named_servers=True).split("<script", 1)[1].split("</script>", 1)[0]
