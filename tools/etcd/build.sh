#!/usr/bin/env bash
# Builds etcd (the server binary, go.etcd.io/etcd/server/v3) at the version pinned in go.mod into
# $1 (default ../../.tools/bin). Usage: tools/etcd/build.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.tools/bin}" && cd "${1:-$here/../../.tools/bin}" && pwd)"
cd "$here"
version="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
echo "building etcd $version -> $out/etcd" >&2
CGO_ENABLED="${CGO_ENABLED:-0}" go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
mv -f "$out/etcd.tmp" "$out/etcd"
