#!/usr/bin/env python3
"""Builds a wheelhouse for a target host's Python on the controller (role python_venv).

Reads a JSON spec on stdin:
  dest               final directory (made atomically: built in <dest>.tmp, then renamed)
  requirements       top-level pins ("name==version")
  constraints        pins for the whole closure (may be empty)
  build_from_source  requirements that only exist as source archives (pure Python)
  python_version     the host's "3.13"
  machine            the host's platform.machine(), e.g. "x86_64"
  glibc              the host's glibc version, e.g. "2.41"
  index_url          optional package index

The result: <dest>/ with every wheel, requirements.txt, constraints.txt and COMPLETE, and
<dest>.tar holding the same files (what the host unpacks). Nothing is built or fetched when
<dest>/COMPLETE exists.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile


def platforms(machine, glibc):
    """manylinux tags a host with this glibc accepts (pip does not expand them itself)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2:
        raise SystemExit(f"unexpected glibc version {glibc}")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{machine}" for m, name in legacy.items() if m <= minor]
    return tags


def pip(*args):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def main():
    spec = json.load(sys.stdin)
    dest = os.path.abspath(os.path.expanduser(spec["dest"]))
    if os.path.exists(os.path.join(dest, "COMPLETE")):
        print(json.dumps({"changed": False, "dest": dest}))
        return
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    index = ["--index-url", spec["index_url"]] if spec.get("index_url") else []

    with open(os.path.join(tmp, "requirements.txt"), "w") as f:
        f.write("".join(r + "\n" for r in spec["requirements"]))
    with open(os.path.join(tmp, "constraints.txt"), "w") as f:
        f.write("".join(r + "\n" for r in spec.get("constraints", [])))

    # Source-only packages become wheels here; only pure-Python ones can serve another host.
    for req in spec.get("build_from_source", []):
        before = set(os.listdir(tmp))
        pip("wheel", "--no-deps", "--wheel-dir", tmp, *index, req)
        for name in set(os.listdir(tmp)) - before:
            if name.endswith(".whl") and not name.endswith("-none-any.whl"):
                raise SystemExit(f"{req} built the platform-specific wheel {name}; it cannot be built on the controller")

    pyver = spec["python_version"].replace(".", "")
    args = ["download", "--dest", tmp, "--find-links", tmp, "--only-binary=:all:",
            "--python-version", spec["python_version"], "--implementation", "cp",
            "--abi", f"cp{pyver}", "--abi", "abi3", "--abi", "none", *index,
            "--requirement", os.path.join(tmp, "requirements.txt"),
            "--constraint", os.path.join(tmp, "constraints.txt")]
    for tag in platforms(spec["machine"], spec["glibc"]):
        args += ["--platform", tag]
    pip(*args)

    with tarfile.open(tmp + ".tar", "w") as tar:
        for name in sorted(os.listdir(tmp)):
            tar.add(os.path.join(tmp, name), arcname=name)
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        f.write("\n".join(sorted(os.listdir(tmp))) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp + ".tar", dest + ".tar")
    os.replace(tmp, dest)
    print(json.dumps({"changed": True, "dest": dest, "files": len(os.listdir(dest))}))


if __name__ == "__main__":
    main()
