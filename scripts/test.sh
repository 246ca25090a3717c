#!/usr/bin/env bash
# Installs what the tests need if it is missing, then runs the format check, clippy with
# warnings denied, every test (unit, integration, doc), rustdoc and the offline demo.
# CI runs exactly this script (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

install_redis() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server
    elif command -v dnf >/dev/null 2>&1; then
        $sudo dnf install -y redis
    elif command -v apk >/dev/null 2>&1; then
        $sudo apk add --no-cache redis
    elif command -v pacman >/dev/null 2>&1; then
        $sudo pacman -S --noconfirm redis
    elif command -v brew >/dev/null 2>&1; then
        brew install redis
    else
        echo "error: redis-server is missing and no known package manager was found." >&2
        echo "Install Redis 7.0 or newer so that redis-server is on PATH, or set REDIS_SERVER_BIN." >&2
        exit 1
    fi
}

# teloxide_tests (a dev-dependency) builds teloxide with native-tls: OpenSSL's headers and
# pkg-config.
if command -v apt-get >/dev/null 2>&1 && ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl 2>/dev/null; }; then
    say "OpenSSL headers or pkg-config not found: installing them"
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl-dev pkg-config
fi

REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-redis-server}"
if ! command -v "$REDIS_SERVER_BIN" >/dev/null 2>&1; then
    say "redis-server not found: installing it"
    install_redis
fi
version=$("$REDIS_SERVER_BIN" --version | sed -n 's/.* v=\([0-9]*\.[0-9]*\).*/\1/p')
major=${version%%.*}
minor=${version#*.}
if [ -z "$version" ] || [ "$major" -lt 7 ]; then
    echo "error: the tests need Redis 7.0 or newer (script flags); found '${version:-unknown}'." >&2
    exit 1
fi
echo "redis-server $version (each test starts its own; nothing uses port 6379)"

# PostgreSQL's server binaries (initdb, postgres): the tests of the SQL listings start
# their own server from them. Debian puts them in /usr/lib/postgresql/*/bin, off PATH.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    say "PostgreSQL's initdb not found: installing the server"
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    elif command -v dnf >/dev/null 2>&1; then
        $sudo dnf install -y postgresql-server
    elif command -v apk >/dev/null 2>&1; then
        $sudo apk add --no-cache postgresql
    elif command -v brew >/dev/null 2>&1; then
        brew install postgresql
    else
        echo "error: PostgreSQL's initdb is missing and no known package manager was found." >&2
        echo "Install PostgreSQL's server, or set PG_BIN to the folder holding initdb and postgres." >&2
        exit 1
    fi
fi

# Every feature the tests cover: the CLI, the SQL listings and the test kit.
FEATURES="cli,sqlite,postgres,testing"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets --features $FEATURES -- -D warnings"
cargo clippy --locked --all-targets --features "$FEATURES" -- -D warnings

# Every combination the README's feature table names builds, lints and documents
# cleanly: none, each feature alone (without the default `tls`), the defaults with the test
# kit (a bot's dev-dependency), and all (above, and rustdoc below). A `cfg` that breaks one
# combination (an import, a doc link to an item only another feature adds) fails here.
# The library is enough for clippy (plus the binary for `cli`, which is what it builds).
say "clippy and rustdoc of each feature combination"
matrix_started=$(date +%s)
check_features() {
    local label=$1
    shift
    local targets=(--lib)
    if [ "$label" = cli ]; then targets+=(--bins); fi
    echo "features: $label"
    cargo clippy --locked --quiet "${targets[@]}" "$@" -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet --lib "$@"
}
check_features none --no-default-features
for feature in tls cli sqlite postgres testing; do
    check_features "$feature" --no-default-features --features "$feature"
done
check_features "default,testing" --features testing
echo "feature combinations checked in $(($(date +%s) - matrix_started)) s"

say "tests"
# The suite is written for nextest (a process per test: process-wide state such as the
# metrics recorder and teloxide_tests' lock is per test), so it is installed when missing
# rather than replaced by `cargo test`.
if ! cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest not found: installing it"
    cargo install --locked cargo-nextest
fi
cargo nextest run --locked --all-targets --features "$FEATURES" --no-fail-fast

say "doc tests (README included)"
cargo test --locked --doc --features "$FEATURES"

say "cargo doc (broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet --features "$FEATURES"

say "offline demo"
cargo run --locked --quiet --example demo >/tmp/retention-demo-memory.txt
# The same script on a SQLite file prints the same story (only the store line differs).
demo_db="$(mktemp -d)"
DATABASE_URL="sqlite:$demo_db/demo.db" cargo run --locked --quiet --example demo \
    >/tmp/retention-demo-sqlite.txt
rm -rf "$demo_db"
if ! diff <(sed 1,2d /tmp/retention-demo-memory.txt) <(sed 1,2d /tmp/retention-demo-sqlite.txt); then
    echo "the demo told a different story on SQLite" >&2
    exit 1
fi
echo "demo ran, in memory and on SQLite"

say "the CLI binary runs"
cargo run --locked --quiet --features "$FEATURES" --bin teloxide-retention -- --help >/dev/null
echo "teloxide-retention --help ran"

say "all checks passed"
