#!/usr/bin/env bash
# A Debian 12 root file system in which the packaging tests boot a real systemd
# (systemd-nspawn -b) and install the .deb. Prints the path of a tarball of it.
#
# debootstrap takes minutes, so the tarball is cached: CACHE_DIR (argument, default
# ~/.cache/imagegate-test) keeps one per key, a hash of this script (which holds the
# suite and the package list) and the mirror. It is built only when missing; delete
# it to rebuild. The packages are everything the .deb and the test need, so nothing
# is downloaded inside the container, which has no network.
#
# Needs root and debootstrap (`make test` installs it). The mirror is the one this
# machine's apt uses (/etc/apt/sources.list*), or MIRROR from the environment.
set -euo pipefail

suite=bookworm
# systemd as PID 1; curl for the test's requests; python3.11 because the .deb depends
# on it (passwd and libc6, its other dependencies, are in every base system).
include=systemd,systemd-sysv,dbus,curl,ca-certificates,python3.11

cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/imagegate-test}

# The URI of the first apt source that serves $suite (main), one-line or deb822.
apt_mirror() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$file"
    done
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v suite="$suite" '
            function flush() {
                if (!done && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") &&
                    enabled != "no" && uris != "") { split(uris, u, " "); print u[1]; done = 1 }
                types = suites = uris = enabled = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^Enabled:/ { sub(/^Enabled:[ \t]*/, ""); enabled = $0 }
            END { flush() }' "$file"
    done
}

mirror=${MIRROR:-$(apt_mirror | head -n 1)}
if [ -z "$mirror" ]; then
    echo "debian-rootfs.sh: no apt source for $suite in /etc/apt/sources.list*; set MIRROR" >&2
    exit 1
fi

key=$({ cat "$0"; echo "$mirror"; } | sha256sum | cut -c 1-16)
tarball=$cache/debian-$suite-$key.tar.gz
if [ -f "$tarball" ]; then
    touch "$tarball" # in use: see the clean-up below
    echo "$tarball"
    exit 0
fi

command -v debootstrap >/dev/null || {
    echo "debian-rootfs.sh: debootstrap is not installed (apt-get install debootstrap)" >&2
    exit 1
}
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "debian-rootfs.sh: debootstrap $suite from $mirror (a few minutes, once)" >&2
debootstrap --variant=minbase --include="$include" "$suite" "$work/root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}
# Smaller and quicker to unpack: downloaded packages and indexes are not needed.
rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/*
tar --numeric-owner --xattrs -C "$work/root" -czf "$work/rootfs.tar.gz" .
mv "$work/rootfs.tar.gz" "$tarball" # atomic: a half-written tarball is never used
# Other keys are other package lists or mirrors. Another checkout on this machine may
# still use one (a branch, a worktree): drop only those nobody used for a week.
find "$cache" -maxdepth 1 -name "debian-$suite-*.tar.gz" ! -path "$tarball" -mtime +7 -delete
echo "$tarball"
