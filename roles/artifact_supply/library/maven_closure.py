#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Resolve a Maven coordinate to its runtime closure in a verified controller-side cache."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: maven_closure
short_description: Resolve Maven coordinates to one verified lib directory in a local cache
description:
  - Resolves one component (one or more Maven coordinates, for example a C(pom) distribution
    coordinate) to its transitive runtime closure with Maven's C(dependency:copy-dependencies),
    into C(<cache_dir>/<name>-<version>/lib), and optional single artifacts (such as
    classifier zips) into C(<cache_dir>/<name>-<version>/extras).
  - Writes C(SHA256SUMS) and C(artifacts.json) beside them. On every later run all files are
    verified against C(SHA256SUMS); when they verify and the request is unchanged, Maven is not
    run at all, so a warm or copied cache needs no network.
  - Maven uses its own default repository plus the extra repositories given in C(repositories)
    (a site artifact mirror, for example). Repositories declared inside POMs are switched off by a
    generated mirror, unless the operator's settings file already mirrors everything.
  - The Maven local repository lives in C(<cache_dir>/repository), so copying C(cache_dir) to an
    air-gapped controller is enough.
options:
  name:
    description: Component name; the cache directory is C(<name>-<version>).
    type: str
    required: true
  coordinates:
    description:
      - Maven coordinates C(groupId:artifactId:version[:type[:classifier]]) whose runtime closure
        goes into C(lib). Use type C(pom) for distribution POMs.
    type: list
    elements: str
    required: true
  extras:
    description:
      - Single artifacts (no transitive closure) copied into C(extras), for example
        C(io.imunity:unity-server-engine::zip:scripts). An empty version means the component's version.
    type: list
    elements: str
    default: []
  managed:
    description:
      - Version pins C(groupId:artifactId:version) added as dependency management, overriding
        the version that the POMs ask for anywhere in the closure.
      - An entry of type C(pom) (C(groupId:artifactId:version:pom)) is imported as a bill of
        materials, so that every version it manages applies.
    type: list
    elements: str
    default: []
  repositories:
    description:
      - Extra Maven repositories (C(file://) or C(https://) URLs) consulted besides the default
        repository, for example a site artifact mirror. A C(file://) repository that does not
        exist fails at once, naming the path.
    type: list
    elements: str
    default: []
  version:
    description: Version used in the directory name; defaults to the first coordinate's version.
    type: str
  cache_dir:
    description: Cache root on the controller (C(~) is expanded).
    type: path
    required: true
  offline:
    description:
      - Never use the network. A verified cache is used as is; otherwise Maven runs with C(-o)
        against the cache's local repository and fails when something is missing.
    type: bool
    default: false
  on_corruption:
    description:
      - What to do when files in the cache do not match C(SHA256SUMS).
      - C(fail) stops with a message naming every bad file.
      - C(resolve) removes the component directory and the local-repository copies of the bad
        files, then resolves again (needs the network unless the repository copies are intact).
    type: str
    choices: [fail, resolve]
    default: fail
  maven_executable:
    description: Maven command (looked up in C(PATH)).
    type: str
    default: mvn
  maven_settings:
    description:
      - Operator settings file (site mirror, proxy, credentials). Empty means C(~/.m2/settings.xml)
        when it exists. When the file mirrors C(*) it is used unchanged; otherwise the
        central-only guard mirror is added to a temporary copy.
    type: path
  maven_args:
    description: Extra arguments for Maven.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds Maven may run before it is stopped.
    type: int
    default: 3600
  lock_timeout:
    description: Seconds to wait for another run that holds the cache lock.
    type: int
    default: 3600
author:
  - ihpc deployment bundle
"""

EXAMPLES = r"""
- name: Resolve UNICORE/X
  maven_closure:
    name: unicorex
    coordinates: ["eu.unicore:unicorex-distribution:3.0.1:pom"]
    cache_dir: ~/.cache/ihpc/artifacts
  delegate_to: localhost
"""

RETURN = r"""
resolved:
  description: Whether Maven ran (same as changed outside check mode).
  type: bool
  returned: always
component_dir:
  description: C(<cache_dir>/<name>-<version>).
  type: str
  returned: always
lib_dir:
  description: Directory with the runtime jars.
  type: str
  returned: always
extras_dir:
  description: Directory with the extra artifacts.
  type: str
  returned: always
version:
  description: Component version.
  type: str
  returned: always
jars:
  description: Number of files in lib_dir.
  type: int
  returned: success
lib_files:
  description: Sorted file names in lib_dir.
  type: list
  returned: success
extras_files:
  description: Sorted file names in extras_dir.
  type: list
  returned: success
missing:
  description: Artifacts Maven could not find (on resolution failure).
  type: list
  returned: failure
corrupt:
  description: Files that failed verification.
  type: list
  returned: when corruption was found
"""

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible.module_utils.basic import AnsibleModule

MANIFEST = "SHA256SUMS"
METADATA = "artifacts.json"
REPOSITORY = "repository"
# Pinned so that the same plugin resolves the closure on every controller.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
GUARD_MIRROR_ID = "only-default-repository"
# Repositories declared in POMs are sent to an empty local directory made for each run: a lookup
# there answers "not found" at once, without network.
GUARD_DIR = "repositories-declared-in-poms-are-not-used"
EXTRA_REPOSITORY_ID = "extra-repository-%d"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PART_RE = re.compile(r"^[A-Za-z0-9_.${}-]*$")
MISSING_RES = [
    re.compile(r"Could not find artifact (\S+)"),
    re.compile(r"Failure to find (\S+)"),
    re.compile(r"The following artifacts could not be resolved: ([^:]+(?::[^:\s,]+)+(?:, [^:]+(?::[^:\s,]+)+)*)"),
    re.compile(r"Couldn't download artifact: (\S+)"),
    re.compile(r"(\S+) was not found in"),
    re.compile(r"Could not transfer artifact (\S+) from/to " + GUARD_MIRROR_ID),
]


class ClosureError(Exception):
    def __init__(self, msg, **extra):
        super().__init__(msg)
        self.extra = extra


def parse_coordinate(text, default_version=None, what="coordinate"):
    parts = text.strip().split(":")
    if len(parts) < 3 or len(parts) > 5:
        raise ClosureError("%s '%s' must be groupId:artifactId:version[:type[:classifier]]" % (what, text))
    group, artifact, version = parts[0], parts[1], parts[2]
    ctype = parts[3] if len(parts) > 3 and parts[3] else "jar"
    classifier = parts[4] if len(parts) > 4 else ""
    if not version:
        version = default_version or ""
    for part in (group, artifact, version, ctype, classifier):
        if not PART_RE.match(part):
            raise ClosureError("%s '%s' has an invalid part '%s'" % (what, text, part))
    if not group or not artifact or not version:
        raise ClosureError("%s '%s' lacks a groupId, artifactId or version" % (what, text))
    return {"groupId": group, "artifactId": artifact, "version": version, "type": ctype, "classifier": classifier}


def coordinate_text(coord):
    text = "%(groupId)s:%(artifactId)s:%(version)s:%(type)s" % coord
    if coord["classifier"]:
        text += ":" + coord["classifier"]
    return text


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path):
    entries = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            match = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line)
            if not match:
                raise ClosureError("%s line %d is not '<sha256>  <file>'" % (path, number))
            entries[match.group(2)] = match.group(1)
    return entries


def payload_files(component_dir):
    """Relative paths of every file under lib/ and extras/."""
    found = []
    for sub in ("lib", "extras"):
        base = os.path.join(component_dir, sub)
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base):
            for name in files:
                found.append(os.path.relpath(os.path.join(root, name), component_dir))
    return sorted(found)


def verify(component_dir, request):
    """Return (state, details): state is 'absent', 'stale', 'corrupt' or 'ok'."""
    manifest_path = os.path.join(component_dir, MANIFEST)
    metadata_path = os.path.join(component_dir, METADATA)
    if not os.path.isdir(component_dir):
        return "absent", {}
    if not os.path.isfile(manifest_path):
        return "corrupt", {"problems": ["%s is missing" % MANIFEST], "corrupt": []}
    try:
        entries = read_manifest(manifest_path)
    except (ClosureError, OSError, UnicodeDecodeError) as exc:
        return "corrupt", {"problems": [str(exc)], "corrupt": []}
    try:
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as exc:
        return "corrupt", {"problems": ["%s is unreadable: %s" % (METADATA, exc)], "corrupt": []}
    problems, corrupt = [], []
    present = set(payload_files(component_dir))
    for rel, expected in sorted(entries.items()):
        path = os.path.join(component_dir, rel)
        if rel not in present:
            problems.append("%s: missing" % rel)
            corrupt.append(rel)
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append("%s: SHA-256 %s, expected %s" % (rel, actual, expected))
            corrupt.append(rel)
    for rel in sorted(present - set(entries)):
        problems.append("%s: not listed in %s" % (rel, MANIFEST))
        corrupt.append(rel)
    if not any(rel.startswith("lib/") for rel in entries):
        problems.append("%s lists no file under lib/" % MANIFEST)
    if problems:
        return "corrupt", {"problems": problems, "corrupt": corrupt, "metadata": metadata}
    if metadata.get("request") != request:
        return "stale", {"metadata": metadata}
    return "ok", {"metadata": metadata, "entries": entries}


def guard_url(work_dir):
    path = os.path.join(work_dir, GUARD_DIR)
    os.makedirs(path, exist_ok=True)
    return "file://" + path


def guard_mirror_of(extra_count):
    """The repositories the guard catches: all but the default one and the configured extras."""
    return ",".join(["*", "!central"] + ["!" + EXTRA_REPOSITORY_ID % n for n in range(1, extra_count + 1)])


def guard_settings_xml(url, extra_count=0):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!-- Generated for one resolution run: only the default and the configured repositories are used. -->\n'
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">\n'
        "  <mirrors>\n" + guard_mirror_xml(url, extra_count) + "  </mirrors>\n"
        "</settings>\n"
    )


def guard_mirror_xml(url, extra_count=0):
    return (
        "    <mirror>\n"
        "      <id>%s</id>\n"
        "      <name>Repositories declared in POMs are switched off; only the configured ones are used</name>\n"
        "      <mirrorOf>%s</mirrorOf>\n"
        "      <url>%s</url>\n"
        "    </mirror>\n" % (GUARD_MIRROR_ID, guard_mirror_of(extra_count), escape(url))
    )


def check_repositories(urls):
    """Normalised repository URLs; a missing local repository is an error that names the path."""
    checked = []
    for url in urls:
        url = url.strip()
        if url.startswith("file://"):
            path = url[len("file://"):]
            if not os.path.isabs(path):
                raise ClosureError("repository %s: a file:// URL needs an absolute path" % url)
            if not os.path.isdir(path):
                raise ClosureError(
                    "the configured Maven repository %s does not exist (no directory %s); fix "
                    "artifact_supply_maven_repositories or restore the site mirror" % (url, path)
                )
        elif not url.startswith("https://") and not url.startswith("http://"):
            raise ClosureError("repository %s must be a file://, https:// or http:// URL" % url)
        checked.append(url.rstrip("/"))
    return checked


def settings_for_run(operator_settings, work_dir, extra_count=0):
    """Path of the settings file for this run and a note on where it came from."""
    if not operator_settings:
        path = os.path.join(work_dir, "settings.xml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(guard_settings_xml(guard_url(work_dir), extra_count))
        note = "generated (default repository%s)" % (" and %d configured ones" % extra_count if extra_count else " only")
        return path, note
    try:
        tree = ET.parse(operator_settings)
    except (ET.ParseError, OSError) as exc:
        raise ClosureError("Maven settings file %s is unreadable: %s" % (operator_settings, exc))
    root = tree.getroot()
    namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    prefix = "{%s}" % namespace if namespace else ""
    mirrors = root.find(prefix + "mirrors")
    if mirrors is not None:
        for mirror in mirrors.findall(prefix + "mirror"):
            targets = [t.strip() for t in (mirror.findtext(prefix + "mirrorOf") or "").split(",")]
            if "*" in targets or "external:*" in targets:
                # The operator's mirror already serves every repository, POM-declared ones included.
                return operator_settings, "operator's, mirrors everything: %s" % operator_settings
    if namespace:
        ET.register_namespace("", namespace)
    if mirrors is None:
        mirrors = ET.SubElement(root, prefix + "mirrors")
    mirror = ET.SubElement(mirrors, prefix + "mirror")
    for tag, text in (("id", GUARD_MIRROR_ID), ("mirrorOf", guard_mirror_of(extra_count)), ("url", guard_url(work_dir))):
        ET.SubElement(mirror, prefix + tag).text = text
    path = os.path.join(work_dir, "settings.xml")
    # The copy may carry the operator's credentials: private, and removed after the run.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tree.write(handle, encoding="UTF-8", xml_declaration=True)
    return path, "operator's %s plus the default-repository-only mirror" % operator_settings


def dependency_xml(coord, indent="      ", import_boms=False):
    lines = [
        "<dependency>",
        "  <groupId>%s</groupId>" % escape(coord["groupId"]),
        "  <artifactId>%s</artifactId>" % escape(coord["artifactId"]),
        "  <version>%s</version>" % escape(coord["version"]),
    ]
    if coord.get("type", "jar") != "jar":
        lines.append("  <type>%s</type>" % escape(coord["type"]))
    if coord.get("classifier"):
        lines.append("  <classifier>%s</classifier>" % escape(coord["classifier"]))
    if import_boms and coord.get("type") == "pom":
        lines.append("  <scope>import</scope>")
    lines.append("</dependency>")
    return "".join(indent + line + "\n" for line in lines)


def artifact_item_xml(coord):
    fields = ["groupId", "artifactId", "version", "type", "classifier"]
    inner = "".join(
        "                  <%s>%s</%s>\n" % (f, escape(coord[f]), f) for f in fields if coord.get(f)
    )
    return "                <artifactItem>\n" + inner + "                </artifactItem>\n"


def repositories_xml(repositories):
    if not repositories:
        return ""
    entries = "".join(
        "    <repository>\n"
        "      <id>%s</id>\n"
        "      <url>%s</url>\n"
        "      <releases><enabled>true</enabled></releases>\n"
        "      <snapshots><enabled>false</enabled></snapshots>\n"
        "    </repository>\n" % (EXTRA_REPOSITORY_ID % n, escape(url))
        for n, url in enumerate(repositories, 1)
    )
    return "  <repositories>\n%s  </repositories>\n" % entries


def generate_pom(name, coords, extras, managed, lib_dir, extras_dir, list_file, repositories=()):
    plugin_group, plugin_artifact, plugin_version = DEPENDENCY_PLUGIN.split(":")
    managed_xml = ""
    if managed:
        managed_xml = (
            "  <dependencyManagement>\n    <dependencies>\n"
            + "".join(dependency_xml(m, import_boms=True) for m in managed)
            + "    </dependencies>\n  </dependencyManagement>\n"
        )
    extras_execution = ""
    if extras:
        extras_execution = (
            "          <execution>\n"
            "            <id>extras</id>\n"
            "            <configuration>\n"
            "              <outputDirectory>%s</outputDirectory>\n"
            "              <artifactItems>\n%s              </artifactItems>\n"
            "            </configuration>\n"
            "          </execution>\n" % (escape(extras_dir), "".join(artifact_item_xml(e) for e in extras))
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!-- Generated: resolves the runtime closure of component %s. -->\n"
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>local.artifact-supply</groupId>\n"
        "  <artifactId>%s-closure</artifactId>\n"
        "  <version>0</version>\n"
        "  <packaging>pom</packaging>\n"
        "%s"
        "%s"
        "  <dependencies>\n%s  </dependencies>\n"
        "  <build>\n    <plugins>\n      <plugin>\n"
        "        <groupId>%s</groupId>\n        <artifactId>%s</artifactId>\n        <version>%s</version>\n"
        "        <executions>\n"
        "          <execution>\n"
        "            <id>closure</id>\n"
        "            <configuration>\n"
        "              <outputDirectory>%s</outputDirectory>\n"
        "              <includeScope>runtime</includeScope>\n"
        "              <excludeTypes>pom,zip</excludeTypes>\n"
        "              <overWriteReleases>true</overWriteReleases>\n"
        "            </configuration>\n"
        "          </execution>\n"
        "          <execution>\n"
        "            <id>listing</id>\n"
        "            <configuration>\n"
        "              <outputFile>%s</outputFile>\n"
        "              <includeScope>runtime</includeScope>\n"
        "              <excludeTypes>pom,zip</excludeTypes>\n"
        "              <outputAbsoluteArtifactFilename>true</outputAbsoluteArtifactFilename>\n"
        "              <outputScope>true</outputScope>\n"
        "              <sort>true</sort>\n"
        "            </configuration>\n"
        "          </execution>\n"
        "%s"
        "        </executions>\n"
        "      </plugin>\n    </plugins>\n  </build>\n"
        "</project>\n"
        % (
            escape(name),
            escape(re.sub(r"[^A-Za-z0-9._-]", "-", name)),
            repositories_xml(repositories),
            managed_xml,
            "".join(dependency_xml(c) for c in coords),
            plugin_group,
            plugin_artifact,
            plugin_version,
            escape(lib_dir),
            escape(list_file),
            extras_execution,
        )
    )


def parse_listing(list_file):
    """Map file name -> {coordinate, repository_path} from dependency:list output."""
    mapping = {}
    if not os.path.isfile(list_file):
        return mapping
    with open(list_file, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("The following") or ":" not in line:
                continue
            line = line.split(" -- ", 1)[0].strip()
            match = re.match(r"^([^:\s]+(?::[^:\s/]+){4,5}):(/.+)$", line)
            if not match:
                continue
            coord, path = match.group(1), match.group(2)
            mapping[os.path.basename(path)] = {"coordinate": coord, "repository_path": path}
    return mapping


def find_missing(log_text):
    missing = set()
    for regex in MISSING_RES:
        for match in regex.finditer(log_text):
            for item in match.group(1).split(", "):
                item = item.strip().rstrip(".,;")
                if item.count(":") >= 3:
                    missing.add(item)
    return sorted(missing)


class CacheLock:
    def __init__(self, path, timeout):
        self.path, self.timeout, self.handle = path, timeout, None

    def __enter__(self):
        self.handle = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise ClosureError("another resolution holds %s for more than %d s" % (self.path, self.timeout))
                time.sleep(1)

    def __exit__(self, *_exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class Closure:
    def __init__(self, module):
        self.module = module
        params = module.params
        self.name = params["name"]
        if not NAME_RE.match(self.name):
            raise ClosureError("component name '%s' may hold only letters, digits, '.', '_' and '-'" % self.name)
        if not params["coordinates"]:
            raise ClosureError("component %s has no coordinates" % self.name)
        self.coords = [parse_coordinate(c) for c in params["coordinates"]]
        self.version = params["version"] or self.coords[0]["version"]
        if not NAME_RE.match(self.version):
            raise ClosureError("version '%s' is not usable in a directory name" % self.version)
        self.extras = [parse_coordinate(c, self.version, "extra") for c in params["extras"]]
        self.managed = [parse_coordinate(c, None, "managed pin") for c in params["managed"]]
        self.repositories = check_repositories(params["repositories"])
        self.cache_dir = os.path.abspath(os.path.expanduser(params["cache_dir"]))
        self.component_dir = os.path.join(self.cache_dir, "%s-%s" % (self.name, self.version))
        self.lib_dir = os.path.join(self.component_dir, "lib")
        self.extras_dir = os.path.join(self.component_dir, "extras")
        self.repository = os.path.join(self.cache_dir, REPOSITORY)
        self.request = {
            "coordinates": [coordinate_text(c) for c in self.coords],
            "extras": [coordinate_text(c) for c in self.extras],
            "managed": [coordinate_text(c) for c in self.managed],
            "scope": "runtime",
            "exclude_types": ["pom", "zip"],
            "plugin": DEPENDENCY_PLUGIN,
        }

    def base_result(self):
        return {
            "changed": False,
            "resolved": False,
            "component_dir": self.component_dir,
            "lib_dir": self.lib_dir,
            "extras_dir": self.extras_dir,
            "version": self.version,
            "name": self.name,
        }

    def success_result(self, result):
        lib_files = sorted(os.listdir(self.lib_dir)) if os.path.isdir(self.lib_dir) else []
        extras_files = sorted(os.listdir(self.extras_dir)) if os.path.isdir(self.extras_dir) else []
        result.update(jars=len(lib_files), lib_files=lib_files, extras_files=extras_files)
        return result

    def run(self):
        result = self.base_result()
        state, details = verify(self.component_dir, self.request)
        result["cache_state"] = state
        if state == "ok":
            result["msg"] = "%s verified against %s; Maven not run" % (self.component_dir, MANIFEST)
            return self.success_result(result)
        if state == "corrupt":
            result["corrupt"] = details.get("corrupt", [])
            if self.module.params["on_corruption"] == "fail":
                raise ClosureError(
                    "artifact cache %s failed verification against %s: %s. Remove that directory and "
                    "resolve again (or set on_corruption=resolve); do not deploy from it."
                    % (self.component_dir, MANIFEST, "; ".join(details["problems"][:20])),
                    **result
                )
        if self.module.check_mode:
            result["changed"] = True
            result["msg"] = {
                "absent": "would resolve %s (not in the cache)",
                "stale": "would resolve %s again (the requested coordinates changed)",
                "corrupt": "would resolve %s again (verification failed)",
            }[state] % self.component_dir
            return result
        os.makedirs(self.cache_dir, exist_ok=True)
        with CacheLock(os.path.join(self.cache_dir, ".lock"), self.module.params["lock_timeout"]):
            # Another run may have filled the cache while this one waited for the lock.
            state, details = verify(self.component_dir, self.request)
            if state == "ok":
                result["msg"] = "%s verified (filled by a concurrent run)" % self.component_dir
                return self.success_result(result)
            if state == "corrupt":
                self.purge_repository_copies(details)
            self.resolve(result)
        result["changed"] = result["resolved"] = True
        return self.success_result(result)

    def purge_repository_copies(self, details):
        """Drop the local-repository copies of bad files so Maven downloads them again."""
        files = (details.get("metadata") or {}).get("files", [])
        by_path = {f.get("path"): f for f in files if isinstance(f, dict)}
        for rel in details.get("corrupt", []):
            repo_path = (by_path.get(rel) or {}).get("repository_path")
            if repo_path:
                version_dir = os.path.join(self.repository, os.path.dirname(repo_path))
                if os.path.commonpath([version_dir, self.repository]) == self.repository:
                    shutil.rmtree(version_dir, ignore_errors=True)

    def maven_command(self, settings_path):
        executable = self.module.params["maven_executable"]
        resolved = shutil.which(executable)
        if not resolved:
            raise ClosureError(
                "Maven ('%s') is not on the controller's PATH; it is needed to resolve %s. Install the "
                "Debian packages 'maven' and 'default-jdk-headless' (scripts/bootstrap does), or copy a "
                "filled artifact cache to this controller." % (executable, self.component_dir)
            )
        goals = [DEPENDENCY_PLUGIN + ":copy-dependencies@closure", DEPENDENCY_PLUGIN + ":list@listing"]
        if self.extras:
            goals.append(DEPENDENCY_PLUGIN + ":copy@extras")
        command = [
            resolved,
            "--batch-mode",
            "--no-transfer-progress",
            "--strict-checksums",
            "--update-snapshots",  # also retries artifacts whose earlier absence Maven cached
            "-s", settings_path,
            "-Dmaven.repo.local=" + self.repository,
        ]
        if self.module.params["offline"]:
            command.append("--offline")
        command += self.module.params["maven_args"]
        return command + goals

    def resolve(self, result):
        tmp = tempfile.mkdtemp(prefix=".resolve-%s-" % self.name, dir=self.cache_dir)
        try:
            work = os.path.join(tmp, "work")
            staging = os.path.join(tmp, "component")
            lib_dir = os.path.join(staging, "lib")
            extras_dir = os.path.join(staging, "extras")
            for directory in (work, lib_dir):
                os.makedirs(directory)
            if self.extras:
                os.makedirs(extras_dir)
            list_file = os.path.join(work, "closure.txt")
            with open(os.path.join(work, "pom.xml"), "w", encoding="utf-8") as handle:
                handle.write(generate_pom(self.name, self.coords, self.extras, self.managed, lib_dir, extras_dir,
                                          list_file, self.repositories))
            operator = self.module.params["maven_settings"]
            if operator:
                operator = os.path.expanduser(operator)
                if not os.path.isfile(operator):
                    raise ClosureError("Maven settings file %s does not exist" % operator)
            elif os.path.isfile(os.path.expanduser("~/.m2/settings.xml")):
                operator = os.path.expanduser("~/.m2/settings.xml")
            settings_path, settings_note = settings_for_run(operator, work, len(self.repositories))
            result["maven_settings"] = settings_note
            command = self.maven_command(settings_path)
            result["command"] = " ".join(command)
            started = time.monotonic()
            log_path = os.path.join(work, "maven.log")
            with open(log_path, "w", encoding="utf-8") as log:
                try:
                    proc = subprocess.run(
                        command, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, timeout=self.module.params["timeout"], check=False,
                    )
                    rc = proc.returncode
                except subprocess.TimeoutExpired:
                    rc = None
            result["maven_seconds"] = round(time.monotonic() - started, 1)
            with open(log_path, encoding="utf-8", errors="replace") as log:
                log_text = log.read()
            if rc != 0:
                failed_log = os.path.join(self.cache_dir, "%s-%s.failed.log" % (self.name, self.version))
                shutil.copy(log_path, failed_log)
                result["maven_log"] = failed_log
                missing = find_missing(log_text)
                errors = [l for l in log_text.splitlines() if l.startswith("[ERROR]") and l.strip() != "[ERROR]"]
                reason = "timed out after %d s" % self.module.params["timeout"] if rc is None else "exited with %s" % rc
                said = errors[0][len("[ERROR] "):][:800] if errors else log_text[-1500:]
                hint = "Maven said: " + said
                if missing:
                    hint = (
                        "not found in the repositories Maven may use (the default repository, the configured "
                        "repositories %s, or the mirror of the settings file): %s. %s"
                        % (", ".join(self.repositories) or "(none)", ", ".join(missing), hint)
                    )
                raise ClosureError(
                    "resolving %s failed: Maven %s; %s" % (self.name, reason, hint),
                    missing=missing, maven_errors=errors[:40], **result
                )
            self.finish(staging, list_file, log_path)
            stale_log = os.path.join(self.cache_dir, "%s-%s.failed.log" % (self.name, self.version))
            if os.path.exists(stale_log):
                os.remove(stale_log)

        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def finish(self, staging, list_file, log_path):
        listing = parse_listing(list_file)
        extras_names = {}
        for coord in self.extras:
            name = "%s-%s" % (coord["artifactId"], coord["version"])
            if coord["classifier"]:
                name += "-" + coord["classifier"]
            name += "." + ("jar" if coord["type"] in ("test-jar", "maven-plugin", "ejb") else coord["type"])
            extras_names[name] = {"coordinate": coordinate_text(coord), "repository_path": ""}
        files, sums = [], []
        for rel in payload_files(staging):
            digest = sha256_file(os.path.join(staging, rel))
            entry = {"path": rel, "sha256": digest, "size": os.path.getsize(os.path.join(staging, rel))}
            info = listing.get(os.path.basename(rel)) if rel.startswith("lib/") else extras_names.get(os.path.basename(rel))
            if info:
                entry["coordinate"] = info["coordinate"]
                repo_path = info["repository_path"]
                if repo_path and os.path.commonpath([repo_path, self.repository]) == self.repository:
                    entry["repository_path"] = os.path.relpath(repo_path, self.repository)
            files.append(entry)
            sums.append("%s  %s\n" % (digest, rel))
        if not any(f["path"].startswith("lib/") for f in files):
            raise ClosureError("resolving %s gave an empty lib directory; check the coordinates" % self.name)
        metadata = {
            "name": self.name,
            "version": self.version,
            "request": self.request,
            "resolved_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": files,
        }
        os.makedirs(os.path.join(staging, "resolve"))
        shutil.copy(log_path, os.path.join(staging, "resolve", "maven.log"))
        shutil.copy(os.path.join(os.path.dirname(log_path), "pom.xml"), os.path.join(staging, "resolve", "pom.xml"))
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1, sort_keys=True)
            handle.write("\n")
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as handle:
            handle.writelines(sums)
        # Swap in the new directory; the old one (if any) goes only after the new one is complete.
        old = None
        if os.path.lexists(self.component_dir):
            old = self.component_dir + ".old-%d" % os.getpid()
            os.rename(self.component_dir, old)
        os.rename(staging, self.component_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            coordinates=dict(type="list", elements="str", required=True),
            extras=dict(type="list", elements="str", default=[]),
            managed=dict(type="list", elements="str", default=[]),
            repositories=dict(type="list", elements="str", default=[]),
            version=dict(type="str"),
            cache_dir=dict(type="path", required=True),
            offline=dict(type="bool", default=False),
            on_corruption=dict(type="str", choices=["fail", "resolve"], default="fail"),
            maven_executable=dict(type="str", default="mvn"),
            maven_settings=dict(type="path"),
            maven_args=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=3600),
            lock_timeout=dict(type="int", default=3600),
        ),
        supports_check_mode=True,
    )
    try:
        closure = Closure(module)
        module.exit_json(**closure.run())
    except ClosureError as exc:
        module.fail_json(msg=str(exc), **exc.extra)


if __name__ == "__main__":
    main()
