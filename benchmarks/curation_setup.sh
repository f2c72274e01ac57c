#!/usr/bin/env bash
# Real HTML for the curation tests and benchmark: Debian's documentation packages, then WARCs.
#   bash benchmarks/curation_setup.sh [OUT_DIR]       packages (apt, needs root or sudo) + WARCs
#                                                     (default OUT_DIR: runs/debian-warc)
#   bash benchmarks/curation_setup.sh --packages-only what .ci/run calls: the packages the curation
#                                                     tests read (~30 s, ~200 MB unpacked); exits 0 with
#                                                     a warning where apt is unavailable (tests then skip)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(python3.11-doc debian-handbook debian-reference-en debian-reference-de debian-reference-es
          debian-reference-fr debian-reference-it debian-reference-ja debian-reference-pt debian-reference-zh-cn)
install_packages() {
    if dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
        return 0  # already there: no apt call at all
    fi
    local SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO="sudo -n" || return 1
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    # Package lists may be missing or stale in a fresh container: update once if the install fails.
    $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update -qq >/dev/null 2>&1 &&
        $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; }
}
if [ "${1:-}" = "--packages-only" ]; then
    install_packages || echo "warning: could not install the Debian documentation packages (no apt, no root," \
        "or no network); the curation tests that read them will skip" >&2
    exit 0
fi
OUT="${1:-runs/debian-warc}"
install_packages
python -m benchmarks.warc_fixtures --out "$OUT" --pages-per-shard 250
