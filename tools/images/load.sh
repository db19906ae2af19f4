#!/usr/bin/env bash
# Copies images from buildah's store into containerd's k8s.io namespace, where the kubelet finds them.
# Usage: tools/images/load.sh CONTAINERD_ROOT IMAGE...
# An image whose buildah ID was already loaded is skipped (the ID is recorded beside containerd's root).
# When no containerd serves CONTAINERD_ROOT (its socket, $CONTAINERD_ROOT.sock, does not answer), one is
# started for the copy and stopped afterwards, so `make images` works with or without a running node.
set -euo pipefail
root="$1"; shift
sock="$root.sock"
loaded="$root.loaded"
mkdir -p "$root" "$loaded"
pending=()
for image in "$@"; do
  id="$(buildah inspect --type image --format '{{.FromImageID}}' "$image")"
  stamp="$loaded/$(echo "$image" | tr '/:' '__')"
  [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] || pending+=("$image")
done
[ ${#pending[@]} -gt 0 ] || { echo "images already in containerd ($root): $*" >&2; exit 0; }

started=""
if ! ctr --address "$sock" version >/dev/null 2>&1; then
  state="$(mktemp -d /run/edgequant-containerd-load.XXXXXX)"
  printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' > "$state/config.toml"
  containerd --config "$state/config.toml" --root "$root" --state "$state/state" --address "$sock" \
    --log-level warn > "$state/containerd.log" 2>&1 &
  started=$!
  trap 'kill "$started" 2>/dev/null; wait "$started" 2>/dev/null || true; rm -rf "$state"' EXIT
  for _ in $(seq 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$sock" version >/dev/null || { cat "$state/containerd.log" >&2; exit 1; }
fi
for image in "${pending[@]}"; do
  echo "loading $image into containerd k8s.io ($root)" >&2
  # docker-archive keeps the tag in the archive; streamed, so no multi-GB file is written.
  stamp="$loaded/$(echo "$image" | tr '/:' '__')"
  buildah push -q "$image" "docker-archive:/dev/stdout:$image" \
    | ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs - >/dev/null
  # The kubelet's runtime also names an image by its ID; drop the replaced version's so its layers are freed.
  old="$(cat "$stamp" 2>/dev/null || true)"
  [ -z "$old" ] || ctr --address "$sock" -n k8s.io images rm "sha256:$old" >/dev/null 2>&1 || true
  buildah inspect --type image --format '{{.FromImageID}}' "$image" > "$stamp"
done
ctr --address "$sock" -n k8s.io images ls -q | sed 's/^/  /' >&2
