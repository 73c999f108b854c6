#!/bin/sh
# rep's unfence-peer handler for Pacemaker (crm-unfence-peer.sh's counterpart): removes the
# constraint rep-fence-peer.sh placed, once both disks are UpToDate. Use it as the
# after-resync-target handler. Options and environment: see rep-fence-peer.sh.
exec "$(dirname "$0")/rep-fence-peer.sh" --unfence "$@"
