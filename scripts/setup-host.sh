#!/usr/bin/env bash
# Idempotent set-up of what runwatch and its tests need on a Debian host, as root:
# Docker engine + busybox (apt), a running dockerd without bridge/iptables, and the
# locally built test images (no registry is reachable, so they come from `docker import`).
set -euo pipefail
log() { printf 'setup-host: %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need_pkgs[@]}" >/dev/null
fi

if ! docker version >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log
  nohup dockerd --iptables=false --bridge=none >/var/log/runwatch-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker version >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/runwatch-dockerd.log"; exit 1; }
fi

# Leftovers of earlier test runs.
ids=$(docker ps -aq --filter label=runwatch.test 2>/dev/null || true)
[ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true

IMAGES_VERSION=3
build_busybox() {
  local dir; dir=$(mktemp -d)
  mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,var/log,root,proc,sys,dev,run}
  cp /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf /bin/busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/tmp:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\n' >"$dir/etc/group"
  printf 'root:*:19000:0:99999:7:::\n' >"$dir/etc/shadow"
  echo 'image-file' >"$dir/etc/runwatch-image-file"
  chmod 1777 "$dir/tmp"
  tar -C "$dir" -c . | docker import -c 'CMD ["/bin/sh"]' -c "LABEL runwatch.test.images=$IMAGES_VERSION" - "$1" >/dev/null
  rm -rf "$dir"
}
# Distinct dynamically linked executables from the host (with the libraries ldd lists) next to busybox,
# so allowlist tests can tell programs apart by path and process tests exec real files.
build_tools() {
  local dir; dir=$(mktemp -d)
  mkdir -p "$dir"/{bin,usr/bin,etc,tmp,proc,sys,dev,run,app}
  cp /bin/busybox "$dir/bin/busybox"
  for applet in sh ls mkdir rm echo cat chmod ln nc wget base64 find sed mv cp touch kill ps; do ln -sf /bin/busybox "$dir/bin/$applet"; done
  for exe in /usr/bin/sleep /usr/bin/id /usr/bin/true /usr/bin/env /usr/bin/whoami /usr/bin/head /usr/bin/stat; do
    cp "$exe" "$dir/usr/bin/"
    for lib in $(ldd "$exe" | grep -o '/[^ ]*'); do
      mkdir -p "$dir$(dirname "$lib")"; cp -L "$lib" "$dir$lib"
    done
  done
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' >"$dir/etc/group"
  echo 'image-file' >"$dir/etc/runwatch-image-file"
  chmod 1777 "$dir/tmp"
  tar -C "$dir" -c . | docker import -c 'CMD ["/usr/bin/sleep","infinity"]' -c "LABEL runwatch.test.images=$IMAGES_VERSION" - "$1" >/dev/null
  rm -rf "$dir"
}
for spec in busybox:runwatch-test/busybox:1 tools:runwatch-test/tools:1; do
  kind=${spec%%:*}; ref=${spec#*:}
  have=$(docker image inspect -f '{{index .Config.Labels "runwatch.test.images"}}' "$ref" 2>/dev/null || true)
  if [ "$have" != "$IMAGES_VERSION" ]; then
    log "building test image $ref"
    "build_$kind" "$ref"
  fi
done
log "ready: $(docker version -f 'engine {{.Server.Version}}')"
