#!/usr/bin/env bash
# Checks the `rust-version` in Cargo.toml against the dependencies, without installing
# that toolchain: in a scratch copy, resolves a fresh lockfile with Cargo's MSRV-aware
# resolver (edition 2024's default), then lists the highest `rust-version` the library's
# normal dependencies declare. The check fails if one needs a newer Rust than ours.
# The crate's own floor: edition 2024 (1.85) and `if let ... &&` chains (stable in 1.88).
set -euo pipefail
cd "$(dirname "$0")/.."
ours=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r Cargo.toml src examples tests README.md "$scratch"
(
    cd "$scratch"
    cargo generate-lockfile -q
    cargo tree -p teloxide-retention -e normal --features cli,sqlite,postgres,testing --prefix none | awk '{print $1 " " $2}' | sort -u >normal.txt
    cargo metadata --format-version 1 | python3 -c '
import json, sys
ours = sys.argv[1]
normal = {tuple(l.split()) for l in open("normal.txt")}
key = lambda v: tuple(int(x) for x in (v + ".0.0").split(".")[:3])
needs = sorted(
    (p["rust_version"], p["name"], p["version"])
    for p in json.load(sys.stdin)["packages"]
    if p.get("rust_version") and (p["name"], "v" + p["version"]) in normal
    and p["name"] != "teloxide-retention"
)
needs.sort(key=lambda n: key(n[0]))
for rv, name, version in needs[-5:]:
    print(f"  {name} {version} needs Rust {rv}")
top = needs[-1][0]
if key(top) > key(ours):
    sys.exit(f"error: a dependency needs Rust {top}, newer than rust-version {ours}")
print(f"rust-version {ours}: every normal dependency declares at most {top}")
' "$ours"
)
