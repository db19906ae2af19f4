#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (and, asked by name, the kubelet of the real node) from the
# k8s.io/kubernetes version pinned in go.mod, with the version stamped the way upstream's
# hack/lib/version.sh does, into $1 (default ../../.tools/bin).
# Usage: tools/k8s/build.sh [OUT_DIR] [COMPONENT...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../.tools/bin}" && cd "${1:-$here/../../.tools/bin}" && pwd)"
shift || true
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
cd "$here"

version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"          # e.g. v1.37.2
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
# The tag's time from the module proxy's .info; the proxy records no commit, so gitCommit stays empty.
info="$(go mod download -json k8s.io/kubernetes@"$version" | sed -n 's/.*"Info": "\(.*\)".*/\1/p')"
date="$(sed -n 's/.*"Time": *"\([^".]*\)[^"]*".*/\1/p' "$info" 2>/dev/null | head -1)"
date="${date%Z}"; date="${date:-1970-01-01T00:00:00}Z"

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
done

export CGO_ENABLED="${CGO_ENABLED:-0}"
for c in "${components[@]}"; do
  echo "building $c $version -> $out/$c" >&2
  go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv -f "$out/$c.tmp" "$out/$c"
done
