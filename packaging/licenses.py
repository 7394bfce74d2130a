#!/usr/bin/env python3
"""Writes a package's copyright file (Debian's machine-readable format) and the
license texts of the Rust crates linked into its binary.

    licenses.py <cargo package> <copyright out> <third-party licenses out> [cargo tree args...]

The crates are those `cargo tree -e normal,no-proc-macro` lists for the package
and the target (what the binary links: no build scripts, no proc macros, no
dev-dependencies). Each crate's license files (LICENSE*, COPYING*, NOTICE*,
UNLICENSE*) are copied from its source in the cargo registry; Apache-2.0's text
is left to /usr/share/common-licenses/Apache-2.0.
"""
import json
import os
import subprocess
import sys

LICENSE_PREFIXES = ("license", "licence", "copying", "notice", "unlicense")


def main() -> None:
    package, copyright_out, texts_out, *tree_args = sys.argv[1:]
    target = subprocess.run(
        ["rustc", "-vV"], check=True, capture_output=True, text=True
    ).stdout
    host = next(l.split(": ")[1] for l in target.splitlines() if l.startswith("host: "))
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-p", package, "-e", "normal,no-proc-macro",
         "--prefix", "none", "-f", "{p}", "--target", host, *tree_args],
        check=True, capture_output=True, text=True,
    ).stdout
    linked = set()
    for line in tree.splitlines():
        fields = line.replace(" (*)", "").split()
        if len(fields) >= 2:
            linked.add((fields[0], fields[1].lstrip("v")))
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1", "--filter-platform", host],
        check=True, capture_output=True, text=True,
    ).stdout)
    workspace = set(meta["workspace_members"])
    crates = sorted(
        (p for p in meta["packages"]
         if (p["name"], p["version"]) in linked and p["id"] not in workspace),
        key=lambda p: (p["name"], p["version"]),
    )
    missing = {(n, v) for n, v in linked} - {(p["name"], p["version"]) for p in meta["packages"]}
    if missing:
        sys.exit(f"licenses.py: crates in cargo tree but not in cargo metadata: {sorted(missing)}")
    no_license = [p["name"] for p in crates if not p.get("license")]
    if no_license:
        sys.exit(f"licenses.py: crates without an SPDX license expression: {no_license}")

    with open(copyright_out, "w") as out:
        out.write(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
            "Upstream-Name: ironroot\n"
            "Comment: The binary statically links the Rust crates below (name, version:\n"
            " license), built from their crates.io sources. Their license files, with\n"
            " their copyright holders, are in third-party-licenses.gz beside this file.\n"
            " .\n"
        )
        for p in crates:
            # No registry source: a crate vendored with a patch (vendor/README.md).
            patched = "" if p.get("source") else " (with ironroot's patch, vendor/)"
            out.write(f" {p['name']} {p['version']}: {p['license']}{patched}\n")
        out.write(
            "\nFiles: *\n"
            "Copyright: the ironroot authors\n"
            "License: Apache-2.0\n"
            "\nLicense: Apache-2.0\n"
            " Licensed under the Apache License, Version 2.0 (the \"License\"); you may\n"
            " not use this file except in compliance with the License.\n"
            " .\n"
            " On Debian systems, the complete text of the Apache License, Version 2.0\n"
            " is in /usr/share/common-licenses/Apache-2.0.\n"
        )

    with open(texts_out, "w") as out:
        for p in crates:
            src = os.path.dirname(p["manifest_path"])
            files = sorted(
                f for f in os.listdir(src)
                if f.lower().startswith(LICENSE_PREFIXES)
                and os.path.isfile(os.path.join(src, f))
                and "apache" not in f.lower()
            )
            out.write(f"==== {p['name']} {p['version']} ({p['license']})\n")
            if not files:
                out.write("(no license file in the crate's source: its license is the SPDX "
                          "expression above)\n\n")
            for f in files:
                out.write(f"---- {f}\n")
                with open(os.path.join(src, f), encoding="utf-8", errors="replace") as text:
                    out.write(text.read().rstrip("\n") + "\n\n")


if __name__ == "__main__":
    main()
