# -*- coding: utf-8 -*-
"""Messages of the site data model validation: schema errors as "key.path: rule" and the report.

playbooks/tasks/validate_site_model.yml turns the errors of ansible.utils.validate into the same
"key.path: rule" form as the other checks (site_model_checks.py, site_model_variables.py,
site_model_placeholders.py) and fails once with all of them. Values under a key containing
"password" are never shown.

site_model_schema_messages(errors)
    Turns the error list of ansible.utils.validate (engine ansible.utils.jsonschema)
    into "key.path: rule" strings: a missing or unknown key, a wrong type, a value out of range.
site_model_report(problems)
    The single failure message: a header with the count and the problems sorted by key path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

# jsonschema names a missing key only in the text of its message.
_REQUIRED_RE = re.compile(r"^'(.+)' is a required property$")

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "null": "null",
}


def _as_mapping(value):
    return value if isinstance(value, Mapping) else {}


def _join(path, key):
    if isinstance(key, int):
        return "%s[%d]" % (path, key)
    return "%s.%s" % (path, key) if path else str(key)


def _shown(path, value):
    """A short rendering of an offending value; secrets are never shown."""
    if "password" in path:
        return "<hidden>"
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _found_type(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):  # a bool is caught above
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null (an empty value)"
    return type(value).__name__


def _plural(count, singular, plural):
    return "%s %s" % (count, singular if count == 1 else plural)


def _schema_message(err):
    """Rewrite one jsonschema error (a dict from ansible.utils.jsonschema) as 'path: rule' strings."""
    json_path = err.get("json_path") or "$"
    path = json_path[2:] if json_path.startswith("$.") else json_path[1:]
    validator = err.get("validator")
    expected = err.get("expected")
    found = err.get("found")
    schema = _as_mapping(err.get("relative_schema"))
    schema_path = str(err.get("schema_path") or "")
    description = schema.get("description")
    where = path or "(top level)"

    if "propertyNames" in schema_path.split("."):
        rule = "must be %s" % description if description else "must match %s" % expected
        return ["%s: invalid name '%s': %s" % (_join(path, found), found, rule)]
    if validator == "required":
        match = _REQUIRED_RE.match(str(err.get("message", "")))
        missing = match.group(1) if match else None
        if missing is None:
            return ["%s: %s" % (where, err.get("message"))]
        text = "%s: required key is missing" % _join(path, missing)
        if "then" in schema_path.split(".") and description:
            text += " (%s)" % description
        return [text]
    if validator == "additionalProperties":
        allowed = sorted(_as_mapping(schema.get("properties")))
        extras = [key for key in _as_mapping(found) if key not in allowed]
        return [
            "%s: unknown key (a typo?); allowed keys here: %s" % (_join(path, key), ", ".join(allowed))
            for key in extras
        ] or ["%s: %s" % (where, err.get("message"))]
    if validator == "pattern":
        rule = "must be %s" % description if description else "must match the pattern %s" % expected
        return ["%s: %s %s" % (where, _shown(path, found), rule)]
    if validator == "type":
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in (expected if isinstance(expected, list) else [expected]))
        shown = "" if isinstance(found, (Mapping, list)) or found is None else " " + _shown(path, found)
        return ["%s: must be %s, found %s%s" % (where, wanted, _found_type(found), shown)]
    if validator == "minimum":
        return ["%s: must be at least %s, found %s" % (where, expected, _shown(path, found))]
    if validator == "maximum":
        return ["%s: must be at most %s, found %s" % (where, expected, _shown(path, found))]
    if validator == "minItems":
        return ["%s: must list at least %s" % (where, _plural(expected, "entry", "entries"))]
    if validator == "minProperties":
        return ["%s: must have at least %s" % (where, _plural(expected, "entry", "entries"))]
    if validator == "minLength":
        if expected == 1:
            return ["%s: must not be empty" % where]
        return ["%s: must be at least %s long" % (where, _plural(expected, "character", "characters"))]
    if validator == "maxLength":
        return ["%s: must be at most %s long" % (where, _plural(expected, "character", "characters"))]
    if validator == "uniqueItems":
        return ["%s: entries must be unique" % where]
    message = err.get("message", "is invalid")
    if "password" in path:
        message = "is invalid (%s)" % validator
    return ["%s: %s" % (where, message)]


def site_model_schema_messages(errors):
    """Format the result of ansible.utils.validate (jsonschema engine) as 'path: rule' strings."""
    messages = []
    for err in errors or []:
        if isinstance(err, Mapping):
            messages.extend(_schema_message(err))
        else:
            # The engine reports a broken schema or unusable data as a plain string.
            messages.append("schema validation could not run: %s" % err)
    return messages


def site_model_report(problems):
    """One message for the fail task: a header and the problems, sorted by key path."""
    # Sorted by key path (the text before ': '), so that problems of one key stand together.
    lines = sorted(set(str(p) for p in problems or []), key=lambda line: (line.split(": ", 1)[0], line))
    header = "The site inventory is invalid (%s); no host was touched. See docs/inventory.md." % _plural(
        len(lines), "problem", "problems"
    )
    return "\n".join([header] + ["  - " + line for line in lines])


class FilterModule:
    """Messages of the site data model validation (see docs/inventory.md, "Error format")."""

    def filters(self):
        return {
            "site_model_schema_messages": site_model_schema_messages,
            "site_model_report": site_model_report,
        }
