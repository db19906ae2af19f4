#!/usr/bin/env bash
# Builds the Kueue controller manager (sigs.k8s.io/kueue/cmd/kueue) at the version pinned in
# go.mod, with the version stamped the way Kueue's Makefile does, into $1 (default
# ../../.tools/bin) as `kueue`. `build.sh --crd-dir` prints the folder of Kueue's CRDs in the
# module cache (config/components/crd/bases), downloading the module if needed.
# Usage: tools/kueue/build.sh [OUT_DIR] | tools/kueue/build.sh --crd-dir
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
version="$(go list -m -f '{{.Version}}' sigs.k8s.io/kueue)"          # e.g. v0.17.0
if [ "${1:-}" = "--crd-dir" ]; then
  dir="$(go mod download -json sigs.k8s.io/kueue@"$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  echo "$dir/config/components/crd/bases"
  exit 0
fi
out="$(mkdir -p "${1:-$here/../../.tools/bin}" && cd "${1:-$here/../../.tools/bin}" && pwd)"
# The tag's time from the module proxy's .info; the proxy records no commit.
info="$(go mod download -json sigs.k8s.io/kueue@"$version" | sed -n 's/.*"Info": "\(.*\)".*/\1/p')"
date="$(sed -n 's/.*"Time": *"\([^".]*\)[^"]*".*/\1/p' "$info" 2>/dev/null | head -1)"
date="${date%Z}"; date="${date:-1970-01-01T00:00:00}Z"
pkg=sigs.k8s.io/kueue/pkg/version
ldflags="-s -w -X $pkg.GitVersion=$version -X $pkg.GitCommit= -X $pkg.BuildDate=$date"
echo "building kueue $version -> $out/kueue" >&2
CGO_ENABLED="${CGO_ENABLED:-0}" go build -trimpath -ldflags "$ldflags" -o "$out/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue
mv -f "$out/kueue.tmp" "$out/kueue"
