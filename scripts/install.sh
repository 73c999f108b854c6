#!/usr/bin/env bash
# Install rep: repd and repadm, the systemd units, shell completions, man pages, and the HA
# scripts of ha/ when the repository has them. Run as root from the repository.
#
# usage: scripts/install.sh [--prefix DIR] [--destdir DIR] [--bin-dir DIR]
#   --prefix DIR   installation prefix (default /usr/local): DIR/sbin/{repd,repadm},
#                  DIR/share/man/man8, DIR/share/rep
#   --destdir DIR  stage everything under DIR (packaging, tests); systemd is not reloaded
#   --bin-dir DIR  take repd and repadm from DIR instead of building them
#
# Without --bin-dir the binaries are built with `cargo build --release` into target/install
# (not target/release, whose test build has the fault-injection hook compiled in).
#
# Where things go (with DESTDIR in front):
#   PREFIX/sbin/repd, PREFIX/sbin/repadm
#   /etc/systemd/system/rep@.service, /etc/systemd/system/rep.target  (ExecStart -> PREFIX/sbin)
#   /usr/share/bash-completion/completions/repadm, /usr/share/zsh/vendor-completions/_repadm,
#   /usr/share/fish/vendor_completions.d/repadm.fish
#   PREFIX/share/man/man8/repadm.8 and repadm-COMMAND.8
#   /etc/rep/rep.conf (only if there is none: `include "/etc/rep/*.res";`)
#   ha/ (if present): the tree to PREFIX/share/rep/ha, OCF agents of ha/ocf/ to
#   /usr/lib/ocf/resource.d/rep/, handler scripts of ha/handlers/ to PREFIX/lib/rep/handlers/
#   ha/heartbeat/repdisk to /etc/ha.d/resource.d/ when that directory exists (Heartbeat R1)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
destdir=
bindir=
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --bin-dir) bindir=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
  esac
done
if [ -z "$bindir" ]; then
  cargo build --release --target-dir target/install -p rep-replicator -p rep-adm --bins
  bindir=target/install/release
fi
for b in repd repadm; do
  [ -x "$bindir/$b" ] || { echo "install.sh: $bindir/$b is missing; build it or pass --bin-dir" >&2; exit 1; }
done
d=$destdir
install -d "$d$prefix/sbin" "$d/etc/systemd/system" "$d$prefix/share/man/man8" \
  "$d/usr/share/bash-completion/completions" "$d/usr/share/zsh/vendor-completions" \
  "$d/usr/share/fish/vendor_completions.d" "$d/etc/rep"
install -m 0755 "$bindir/repd" "$bindir/repadm" "$d$prefix/sbin/"
for u in 'rep@.service' rep.target; do
  sed "s#/usr/local/sbin/#$prefix/sbin/#g" "systemd/$u" >"$d/etc/systemd/system/$u"
  chmod 0644 "$d/etc/systemd/system/$u"
done
repadm=$bindir/repadm
"$repadm" completions bash >"$d/usr/share/bash-completion/completions/repadm"
"$repadm" completions zsh >"$d/usr/share/zsh/vendor-completions/_repadm"
"$repadm" completions fish >"$d/usr/share/fish/vendor_completions.d/repadm.fish"
"$repadm" man --dir "$d$prefix/share/man/man8"
if [ ! -e "$d/etc/rep/rep.conf" ]; then
  printf '# rep configuration (DRBD 8.4 syntax): one .res file per resource.\ninclude "/etc/rep/*.res";\n' \
    >"$d/etc/rep/rep.conf"
fi
if [ -d ha ]; then
  install -d "$d$prefix/share/rep"
  rm -rf "$d$prefix/share/rep/ha"
  cp -r ha "$d$prefix/share/rep/ha"
  if [ -d ha/ocf ]; then
    install -d "$d/usr/lib/ocf/resource.d/rep"
    find ha/ocf -maxdepth 1 -type f -exec install -m 0755 {} "$d/usr/lib/ocf/resource.d/rep/" \;
  fi
  # Heartbeat R1 resource script, next to drbd-utils' drbddisk (docs/failover-heartbeat.md).
  if [ -f ha/heartbeat/repdisk ] && [ -d "$d/etc/ha.d/resource.d" ]; then
    install -m 0755 ha/heartbeat/repdisk "$d/etc/ha.d/resource.d/repdisk"
  fi
  if [ -d ha/handlers ]; then
    install -d "$d$prefix/lib/rep/handlers"
    find ha/handlers -maxdepth 1 -type f -exec install -m 0755 {} "$d$prefix/lib/rep/handlers/" \;
  fi
fi
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "installed rep into ${destdir:-/} (prefix $prefix)"
echo "next: put RES.res files in /etc/rep/, then 'repadm create-md RES' and 'systemctl enable --now rep@RES'"
