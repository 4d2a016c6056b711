#!/usr/bin/env bash
# Builds Drover's Debian package with dpkg-deb (present on every Debian system):
#
#   scripts/package.sh [--binary PATH] [--out DIR]
#
# The package holds /usr/bin/drover, the units (/usr/lib/systemd/system, filled in for
# /usr/bin/drover and /etc/drover/drover.toml), the example configuration as
# /etc/drover/drover.toml (a conffile), bash/zsh/fish completions and drover(1), all
# generated from the binary itself, a polkit rule for the supervisor, and maintainer scripts
# that create the `drover` user. Without --binary it builds the release binary first.
# Prints the path of the .deb on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
binary= out=
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
    esac
done
target=${CARGO_TARGET_DIR:-target}
if [[ -z $binary ]]; then
    cargo build --quiet --release --bin drover >&2
    binary=$target/release/drover
fi
out=${out:-$target/debian}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d "${TMPDIR:-/tmp}/drover-deb.XXXXXX")
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$binary" "$root/usr/bin/drover"
install -D -m 0644 config/drover.example.toml "$root/etc/drover/drover.toml"
install -D -m 0644 packaging/50-drover.rules "$root/usr/share/polkit-1/rules.d/50-drover.rules"

# The units, filled in for the installed paths: rendered from the example configuration at
# the place it will have, then the build's paths swapped for the installed ones.
units=$root/usr/lib/systemd/system
"$binary" install-units --system --config config/drover.example.toml --dir "$units" >/dev/null 2>&1
here=$(realpath config/drover.example.toml) bin=$(realpath "$binary")
find "$units" -name '*.d' -type d -prune -exec rm -rf {} +   # class drop-ins: install-units writes them per host
for f in "$units"/*.service; do
    sed -i -e "s|$bin|/usr/bin/drover|g" -e "s|$here|/etc/drover/drover.toml|g" "$f"
done

"$binary" completions bash | install -D -m 0644 /dev/stdin "$root/usr/share/bash-completion/completions/drover"
"$binary" completions zsh | install -D -m 0644 /dev/stdin "$root/usr/share/zsh/vendor-completions/_drover"
"$binary" completions fish | install -D -m 0644 /dev/stdin "$root/usr/share/fish/vendor_completions.d/drover.fish"
mkdir -p "$root/usr/share/man/man1"
"$binary" man | gzip -9n >"$root/usr/share/man/man1/drover.1.gz"
install -D -m 0644 README.md "$root/usr/share/doc/drover/README.md"

mkdir -p "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/postrm "$root/DEBIAN/"
echo /etc/drover/drover.toml >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: drover
Version: $version
Architecture: $arch
Maintainer: Drover maintainers <drover@localhost>
Depends: libc6 (>= 2.34), adduser | passwd
Recommends: systemd
Section: admin
Priority: optional
Installed-Size: $size
Homepage: https://github.com/drover/drover
Description: self-healing supervisor for a fleet of job workers
 Jobs arrive on RabbitMQ, workers run as templated systemd units, and Drover
 keeps every job moving: jittered restarts, drains, quarantines, drift alerts.
CONTROL
mkdir -p "$out"
deb=$out/drover_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
