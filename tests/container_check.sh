#!/usr/bin/env bash
# Build the image from ./Containerfile with podman and run it the way the Helm chart does
# (user 65532, read-only root filesystem, all capabilities dropped, no privilege escalation,
# a tmpfs at /tmp): `mtls-gateway check` on a config mounted read-only, then the demo
# (`demo --once`), which must print that the target received the client certificate, then
# the chart's rendered file-store pod (tests/helm_render.py --podman; needs python3 with
# pyyaml and cryptography, and fetches Helm's Go library from PyPI).
#
# Not part of .ci/run: the image build compiles the gateway again inside the builder (about
# 15 minutes on 2 cores), and it needs podman. Run it by hand:
#
#   bash tests/container_check.sh            # uses the registry images if they can be pulled
#   STAND_IN=1 bash tests/container_check.sh # builds local stand-ins for them (see below)
#
# STAND_IN=1 is for machines that reach Debian's mirrors but no container registry (these
# machines): `debian:bookworm-slim` is made with debootstrap, and `rust:1-bookworm` from it plus
# build-essential and this machine's stable Rust toolchain. The CA certificates under
# /usr/local/share/ca-certificates go into the builder, so that an intercepting egress proxy's
# CA is trusted by cargo. The Containerfile itself is used unchanged.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
image=${IMAGE:-localhost/mtls-gateway:check}
work=$(mktemp -d /tmp/mtls-gateway-container.XXXXXX)
trap 'rm -rf "$work"' EXIT

need() { command -v "$1" >/dev/null || { echo "container_check: $1 not found; $2" >&2; exit 2; }; }
need podman "install it (Debian: apt-get install podman)"

# podman's defaults that fail in some sandboxes (cgroup v1 hybrid mounts, limits it may not
# raise): build with chroot isolation; the run options come from tests/helm_render.py, which
# runs the chart's pod with the same ones.
build_opts=(--isolation chroot --network host)
mapfile -t run_opts < <(python3 "$repo/tests/helm_render.py" --podman-run-opts)
[ "${#run_opts[@]}" -gt 0 ] || { echo "container_check: no podman run options" >&2; exit 2; }

if [ "${STAND_IN:-0}" = 1 ]; then
  need debootstrap "install it (Debian: apt-get install debootstrap)"
  echo "== stand-in base images (no registry): debian:bookworm-slim, rust:1-bookworm"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim >/dev/null
  toolchain=$(rustc --print sysroot)
  mkdir -p "$work/rust"
  cp -a "$toolchain" "$work/rust/toolchain"
  rm -rf "$work/rust/toolchain/share/doc"
  mkdir -p "$work/rust/ca"
  cp /usr/local/share/ca-certificates/*.crt "$work/rust/ca/" 2>/dev/null || true
  cat >"$work/rust/Containerfile" <<'EOF'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential ca-certificates git curl pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && cargo --version
EOF
  podman build "${build_opts[@]}" -q -t docker.io/library/rust:1-bookworm "$work/rust" >/dev/null
  build_opts+=(--pull=never)
fi

echo "== podman build -f Containerfile (a clean checkout of HEAD, so a local target/ is not sent)"
mkdir "$work/src"
git -C "$repo" archive --format=tar HEAD | tar -C "$work/src" -x
podman build "${build_opts[@]}" -t "$image" -f "$work/src/Containerfile" "$work/src"

# The chart's securityContext, as podman options.
hardened=(--user 65532:65532 --read-only --tmpfs /tmp:rw,mode=1777 --cap-drop ALL
  --security-opt no-new-privileges)

echo "== image: user and size"
podman image inspect --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} size={{.Size}}' "$image"
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[ "$user" = 65532:65532 ] || { echo "FAIL: image user is '$user', expected 65532:65532" >&2; exit 1; }

echo "== check: conf/minimal.yaml mounted read-only, its file store on a volume"
mkdir -p "$work/conf" "$work/data"
sed 's|^  path: .*|  path: /var/lib/mtls-gateway|' "$repo/conf/minimal.yaml" >"$work/conf/config.yaml"
chown 65532:65532 "$work/data" 2>/dev/null || chmod 0777 "$work/data"
podman run --rm "${run_opts[@]}" "${hardened[@]}" -v "$work/conf:/etc/mtls-gateway:ro" \
  -v "$work/data:/var/lib/mtls-gateway" "$image" check --config /etc/mtls-gateway/config.yaml

echo "== demo --once as user 65532 on a read-only root filesystem"
out=$(podman run --rm "${run_opts[@]}" "${hardened[@]}" "$image" demo --port 0 --once 2>&1) || {
  echo "$out" >&2; echo "FAIL: demo exited non-zero" >&2; exit 1; }
echo "$out"
grep -q '^OK: the target received the demo client certificate' <<<"$out" || {
  echo "FAIL: the demo did not report the client certificate" >&2; exit 1; }
echo "== the chart's file-store pod under podman (tests/helm_render.py --podman): its securityContext,"
echo "   mounts (ConfigMap, Secret with a stand-in JWKS, PVC and /tmp owned by fsGroup), probes, SIGTERM"
python3 "$repo/tests/helm_render.py" --fetch --podman "$image"
echo "container_check: passed"
