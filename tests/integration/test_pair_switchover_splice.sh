#!/usr/bin/env bash
# test_pair_switchover.sh with the service in splice mode (PAIR_MODE=splice; both nodes share the
# SYN-cookie secret): planned switchovers under load with every byte verified and zero resets,
# the standby restarted and bulk-resynced, the active crashed, the old active returning. Splice
# flows travel on the sync wire (docs/pair_sync.md). Transparent addressing only, to keep the
# CI run near 20 s; `PAIR_ADDRESSING="snat transparent"` runs both (as the passthrough test does).
export TDM_PREFIX=${TDM_PREFIX:-tsws}
export PAIR_MODE=splice
export PAIR_ADDRESSING=${PAIR_ADDRESSING:-transparent}
exec bash "$(dirname "$0")/test_pair_switchover.sh"
