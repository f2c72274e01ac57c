#!/usr/bin/env bash
# Real HTML for the curation tests and benchmark: Debian's documentation packages, then WARCs.
#   bash benchmarks/curation_setup.sh [OUT_DIR]      (default runs/debian-warc; needs root for apt)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/debian-warc}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3.11-doc debian-handbook \
    debian-reference-en debian-reference-de debian-reference-es debian-reference-fr \
    debian-reference-it debian-reference-ja debian-reference-pt debian-reference-zh-cn
python -m lm.curation.warc_fixtures --out "$OUT" --pages-per-shard 250
