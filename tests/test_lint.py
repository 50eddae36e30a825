"""Lint gates and role-interface checks that need no containers."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def run(*cmd):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", NO_COLOR="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900)


def test_yamllint():
    result = run(str(BIN / "yamllint"), "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile():
    result = run(str(BIN / "ansible-lint"), "--offline", "--profile", "production")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-8000:]


def test_every_role_has_an_argument_spec_matching_its_defaults():
    problems = []
    for role in ROLES:
        spec_file = role / "meta" / "argument_specs.yml"
        if not spec_file.is_file():
            problems.append(f"{role.name}: meta/argument_specs.yml is missing")
            continue
        specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
        options = set(specs.get("main", {}).get("options") or {})
        defaults_file = role / "defaults" / "main.yml"
        defaults = set((yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.is_file() else {})
        if options != defaults:
            problems.append(
                f"{role.name}: argument spec and defaults differ: "
                f"only in spec {sorted(options - defaults)}, only in defaults {sorted(defaults - options)}"
            )
    assert not problems, "\n".join(problems)


def test_public_role_variables_carry_the_role_prefix():
    problems = []
    for role in ROLES:
        defaults_file = role / "defaults" / "main.yml"
        if defaults_file.is_file():
            for key in yaml.safe_load(defaults_file.read_text()) or {}:
                if not key.startswith(role.name + "_"):
                    problems.append(f"{role.name}: default '{key}' lacks the prefix '{role.name}_'")
    assert not problems, "\n".join(problems)
