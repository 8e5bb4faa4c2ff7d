#!/usr/bin/env python3
"""Writes the working tree of a benchmark config repo: N files and the shoal.toml that maps them.

    gen_repo.py DIR N OWNER GROUP           # files/dNN/fNNNN.conf (4 KiB each) + shoal.toml
    gen_repo.py DIR N OWNER GROUP --change  # rewrites one file (the "one-file change" commit)

Every file is 4 KiB of config-like text (key = hex value lines), deterministic for a given N, so
runs are comparable; they are spread over 10 directories. Each file lands on the device at
/srv/bench/files/dNN/fNNNN.conf, the same path for all three tools (shoal.toml here, the
ansible playbook, the shell baseline's checkout). OWNER and GROUP are numeric ids (the user
running the bench), so the bench needs no root: shoal-agent chowns every file it writes.
"""

import hashlib
import os
import sys

FILE_SIZE = 4096
DIRS = 10
CHANGED_INDEX = 1  # the file the one-file change rewrites: files/d01/f0001.conf


def rel_path(i: int) -> str:
    return f"files/d{i % DIRS:02d}/f{i:04d}.conf"


def content(i: int, salt: str) -> bytes:
    """4 KiB of `key_NNN = <40 hex>` lines, seeded by the file number and `salt`."""
    lines, n = [], 0
    size = 0
    while size < FILE_SIZE:
        digest = hashlib.sha1(f"{salt}:{i}:{n}".encode()).hexdigest()
        line = f"key_{n:03d} = {digest}\n"
        lines.append(line)
        size += len(line)
        n += 1
    return "".join(lines).encode()[:FILE_SIZE - 1] + b"\n"


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main() -> None:
    args = sys.argv[1:]
    change = "--change" in args
    args = [a for a in args if a != "--change"]
    if len(args) != 4:
        sys.exit(__doc__)
    root, n, owner, group = args[0], int(args[1]), args[2], args[3]

    if change:
        rel = rel_path(CHANGED_INDEX)
        write(os.path.join(root, rel), content(CHANGED_INDEX, "changed"))
        return

    manifest = [
        "# Benchmark config repo (bench/gen_repo.py): one profile, every file plain (no template).",
        "version = 1",
        "",
        "[[profile]]",
        'name = "bench"',
        'match = "*"',
    ]
    for i in range(1, n + 1):
        rel = rel_path(i)
        write(os.path.join(root, rel), content(i, "base"))
        manifest += [
            "",
            "  [[profile.file]]",
            f'  path   = "/srv/bench/{rel}"',
            f'  source = "{rel}"',
            '  mode   = "0644"',
            f'  owner  = "{owner}"',
            f'  group  = "{group}"',
        ]
    write(os.path.join(root, "shoal.toml"), ("\n".join(manifest) + "\n").encode())


if __name__ == "__main__":
    main()
