#!/usr/bin/env bash
# Installs what the tests need if it is missing, then runs the format check, clippy with
# warnings denied, every test (unit, integration, doc), rustdoc and the offline demo.
# CI runs exactly this script (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
stage_started=$started
stages=""
# Each stage's time goes into the summary printed at the end (the README's Development
# section reports it).
say() {
    local now
    now=$(date +%s)
    if [ -n "${stage:-}" ]; then stages+="$(printf '%5d s  %s' $((now - stage_started)) "$stage")"$'\n'; fi
    stage="$*"
    stage_started=$now
    printf '\n==> %s (at %d s)\n' "$*" $((now - started))
}

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

# teloxide_tests (a dev-dependency of the test crate, tests/) builds teloxide with
# native-tls: OpenSSL's headers and pkg-config. The library and its demo need neither.
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

# A clean clone builds without incremental state: it would only be written, never read
# (about a tenth of the workspace crates' compile time). Later runs keep it.
if [ ! -d target/debug ] && [ -z "${CARGO_INCREMENTAL:-}" ]; then
    export CARGO_INCREMENTAL=0
    echo "a clean clone: incremental compilation off for this run"
fi

# The workspace: the library (with its CLI, SQL stores and test kit, which the test crate
# turns on), its two examples, and the test crate (tests/) with every integration test and
# the real-bot and benchmark examples.
say "cargo fmt --check"
cargo fmt --all -- --check

say "clippy of the workspace, every target"
cargo clippy --locked --workspace --all-targets -- -D warnings

# The suite is written for nextest (a process per test: process-wide state such as the
# metrics recorder and teloxide_tests' lock is per test), so it is installed when missing
# rather than replaced by `cargo test`.
# scripts/nextest.toml orders the tests by priority: cargo-nextest 0.9.91 or newer.
nextest_version=$(cargo nextest --version 2>/dev/null | sed -n 's/^cargo-nextest \([0-9.]*\).*/\1/p' | head -1)
if [ -z "$nextest_version" ] || [ "$(printf '%s\n' 0.9.91 "$nextest_version" | sort -V | head -1)" != 0.9.91 ]; then
    say "cargo-nextest ${nextest_version:-not found}: installing a current one"
    cargo install --locked cargo-nextest
fi

say "build the tests"
cargo nextest run --locked --workspace --all-targets --no-run

# The tests spend much of their time waiting for servers, so the checks that only compile
# run beside them (a busy machine is one the suite must pass on anyway). They never write
# what the tests run: clippy and rustdoc write metadata and docs, and the library alone is
# built with other features, into other files. The tests' report follows at the end.
say "tests (in the background), and beside them the checks below"
tests_log=$(mktemp)
(
    tests_started=$(date +%s)
    rc=0
    cargo nextest run --locked --workspace --all-targets --no-fail-fast \
        --config-file scripts/nextest.toml >"$tests_log" 2>&1 || rc=$?
    echo "$(($(date +%s) - tests_started))" >"$tests_log.took"
    exit "$rc"
) &
tests_pid=$!
# A check below that fails stops the tests (nextest stops its tests and their servers on
# an interrupt) and shows what they printed before the script exits with the failure.
stop_tests() {
    pkill -INT -P "$tests_pid" 2>/dev/null || true
    wait "$tests_pid" 2>/dev/null || true
    echo "==> what the tests printed before they were stopped:"
    cat "$tests_log"
    rm -f "$tests_log" "$tests_log.took"
}
trap stop_tests EXIT

# Every combination the README's feature table names builds, lints and documents
# cleanly: none, each feature alone (without the default `tls`), the defaults with the test
# kit (a bot's dev-dependency), and all (the workspace above, and rustdoc below). A `cfg`
# that breaks one combination (an import, a doc link to an item only another feature adds)
# fails here. The library is enough for clippy (plus the binary for `cli`, which is what it
# builds).
say "clippy and rustdoc of each feature combination"
check_features() {
    local label=$1
    shift
    local targets=(--lib)
    if [ "$label" = cli ]; then targets+=(--bins); fi
    echo "features: $label"
    cargo clippy --locked --quiet -p teloxide-retention "${targets[@]}" "$@" -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet -p teloxide-retention --lib "$@"
}
check_features none --no-default-features
for feature in tls cli sqlite postgres testing; do
    check_features "$feature" --no-default-features --features "$feature"
done
check_features "default,testing" --features testing

# The library alone from here on, with its own dev-dependencies only (what a user who
# clones it and runs the demo builds): its doc tests, the docs, the two examples. The
# README's code blocks are the test crate's doc tests.
LIB_FEATURES="sqlite,postgres,testing"

say "doc tests (README included)"
cargo test --locked --doc -p teloxide-retention --features "$LIB_FEATURES"
cargo test --locked --doc -p teloxide-retention-tests

say "cargo doc (broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet -p teloxide-retention --features "cli,$LIB_FEATURES"

say "offline demo"
cargo build --locked --quiet --examples
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

say "waiting for the tests"
tests_rc=0
wait "$tests_pid" || tests_rc=$?
trap - EXIT
tests_took=$(cat "$tests_log.took" 2>/dev/null || echo 0)
cat "$tests_log"
rm -f "$tests_log" "$tests_log.took"
if [ "$tests_rc" -ne 0 ]; then
    echo "the tests failed (above)" >&2
    exit "$tests_rc"
fi
echo "tests ran in $tests_took s, beside the checks above"

say "done"
printf '\nTime by stage:\n%s' "$stages"
printf '%5d s  %s\n' "$tests_took" "the tests (beside the checks from the feature combinations to the demo)"
echo "all checks passed in $(($(date +%s) - started)) s"
