#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with only the Rust
# toolchain: installs what the end-to-end tests run (Go's toolchain, whose
# module corpus and `go` command are our oracle, nginx, which serves the
# tree, and systemd's systemd-analyze, which checks the units), then runs
# every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v go >/dev/null 2>&1 || [ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-go)
[ -d /usr/share/go-1.19/src/cmd/go/testdata/mod ] || need+=(golang-go)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
# systemd-analyze verifies the unit files in systemd/.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]} (needed by the end-to-end and unit-file tests)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# CI fails a test whose tool is missing instead of skipping it.
export GOMIRROR_REQUIRE_TOOLS="${GOMIRROR_REQUIRE_TOOLS:-1}"
cargo test "$@"
