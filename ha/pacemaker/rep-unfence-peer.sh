#!/bin/sh
# rep's unfence-peer handler for Pacemaker (crm-unfence-peer.sh's counterpart): removes the
# constraint rep-fence-peer.sh placed, once both disks are UpToDate. Use it as the
# unfence-peer handler (repd runs it on the node that fenced its peer, once that peer is
# UpToDate again), or as after-resync-target on the fenced node, as DRBD 8.4 setups do.
# Options and environment: see rep-fence-peer.sh.
exec "$(dirname "$0")/rep-fence-peer.sh" --unfence "$@"
