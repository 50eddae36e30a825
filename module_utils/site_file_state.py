# -*- coding: utf-8 -*-
"""The state of a path as the bundle's modules compare it: owner, group, mode and a checksum.

Shared by library/file_state.py (a role's one look at its files) and library/node_state.py
(a compute node's one look at everything a converged run left there).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def describe(path, algorithm="sha1"):
    """{exists, isdir, islnk, owner, group, mode ("0644"), checksum (of a regular file)}."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    out = {
        "exists": True,
        "isdir": stat.S_ISDIR(st.st_mode),
        "islnk": stat.S_ISLNK(st.st_mode),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
    }
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.new(algorithm)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(65536), b""):
                digest.update(block)
        out["checksum"] = digest.hexdigest()
    return out
