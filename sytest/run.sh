#!/usr/bin/env bash
# Run sytest against Repeater through the shared sytest kit.
#
# usage: sytest/run.sh [kit options] [-- run-tests.pl / driver options]
#
# Builds ./cmd/repeater into a temporary directory, then runs
#   ../shared/sytest/run.sh -o $SYTEST_OUT -L sytest -I Repeater [kit options] \
#       -- --hs-binary <built binary> [run-tests.pl / driver options]
# Kit options are passed through, e.g. `-t LIST` (only some tests), `-k`
# (quiet), `-W FILE`, `-o DIR` (instead of $SYTEST_OUT); see the kit's run.sh -h.
# After `--`: run-tests.pl options (e.g. `-C` to log every request) and the
# driver's (`--implementation-name dendrite` to also run Dendrite-only tests).
#
# Environment:
#   SYTEST_DIR   sytest source tree (default: the kit's default,
#                ${XDG_CACHE_HOME:-~/.cache}/sytest/src)
#   SYTEST_OUT   output dir (default:
#                ${XDG_CACHE_HOME:-~/.cache}/sytest/out/repeater-<UTC time>)
#   SYTEST_KIT   the kit's directory (default: ../shared/sytest beside the repo)
#   REPEATER_BINARY  use this binary instead of building one
#   plus the kit's own: SYTEST_PORT_RANGE, SYTEST_BIND_HOST,
#   SYTEST_INCLUDE_DEPRECATED, TIMEOUT_FACTOR
#
# The last line printed is the kit's "N passed, N failed, N skipped"; the exit
# status is the kit's (0 when sytest ran, 2 on setup errors).

set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="${SYTEST_KIT:-$REPO/../shared/sytest}"
[ -x "$KIT/run.sh" ] || { echo "sytest/run.sh: the sytest kit is not at $KIT (set SYTEST_KIT)" >&2; exit 2; }
KIT="$(cd "$KIT" && pwd)"

# split our arguments at "--": kit options before, run-tests.pl options after
KIT_ARGS=()
SYTEST_ARGS=()
while [ $# -gt 0 ]; do
   if [ "$1" = "--" ]; then
      shift
      SYTEST_ARGS=("$@")
      break
   fi
   case "$1" in
      -h|--help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
   esac
   KIT_ARGS+=("$1")
   shift
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/repeater-sytest.XXXXXX")" || exit 2
trap 'rm -rf "$TMP"' EXIT

if [ -n "${REPEATER_BINARY:-}" ]; then
   BIN="$(cd "$(dirname "$REPEATER_BINARY")" && pwd)/$(basename "$REPEATER_BINARY")"
   [ -x "$BIN" ] || { echo "sytest/run.sh: REPEATER_BINARY=$REPEATER_BINARY is not executable" >&2; exit 2; }
else
   BIN="$TMP/repeater"
   echo "sytest/run.sh: building ./cmd/repeater" >&2
   (cd "$REPO" && go build -o "$BIN" ./cmd/repeater) || { echo "sytest/run.sh: build failed" >&2; exit 2; }
fi

OUT="${SYTEST_OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/sytest/out/repeater-$(date -u +%Y%m%dT%H%M%SZ)}"
[ -n "${SYTEST_DIR:-}" ] && export SYTEST_DIR

# -o first, so that an -o among the passed-through options wins
"$KIT/run.sh" -o "$OUT" -L "$REPO/sytest" -I Repeater "${KIT_ARGS[@]+"${KIT_ARGS[@]}"}" \
   -- --hs-binary "$BIN" "${SYTEST_ARGS[@]+"${SYTEST_ARGS[@]}"}"
