#!/bin/sh
# Install rep's Pacemaker integration: the OCF agents ocf:rep:rep and ocf:rep:nbd and the fence-peer
# handlers. As root: `ha/install.sh` (DESTDIR=/some/root ha/install.sh for a package build).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${DESTDIR:-}
install -d -m 0755 "$dest/usr/lib/ocf/resource.d/rep" "$dest/usr/lib/rep"
install -m 0755 "$here/ocf/rep" "$here/ocf/nbd" "$dest/usr/lib/ocf/resource.d/rep/"
install -m 0755 "$here/pacemaker/rep-fence-peer.sh" "$here/pacemaker/rep-unfence-peer.sh" "$dest/usr/lib/rep/"
echo "installed $dest/usr/lib/ocf/resource.d/rep/rep and nbd (ocf:rep:rep, ocf:rep:nbd) and $dest/usr/lib/rep/rep-{fence,unfence}-peer.sh"
