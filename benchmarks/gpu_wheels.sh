#!/usr/bin/env bash
# Downloads the wheels that the lent GPU machine lacks into the repo's ignored .whl/ folder, so a device run
# (which has no network) can install them from the working tree that travels with it.
#
# The GPU image (Python 3.12, jax 0.11.2 + CUDA 13 plugin, triton 3.6.0, flax, optax, orbax-checkpoint, numpy,
# regex, tqdm, matplotlib, absl-py, etils, cloudpickle, protobuf, psutil, ...) already has every runtime dependency
# of `lm` except this one, which is pinned below for cp312 / manylinux x86_64:
#   jax-triton    the `gpu` extra, for kernels/rms_norm_triton.py; 0.3.1 declares jax>=0.8.2 and triton>=3.6
#                 (no upper bounds), so it is the release that declares itself compatible with jax 0.11.2 and
#                 triton 3.6.0; 0.3.0 asks only for jax>=0.6, triton>=3.3 and predates both.
#
# Usage, here (network to PyPI): bash benchmarks/gpu_wheels.sh   (from any directory; PYTHON=... picks the pip)
# Then, on the device (as one `run` command, from the repo root):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && timeout 540 python3 -m benchmarks.gpu_check --out $OUT
#
# Only one version of each package is kept: old wheels of these packages (and of grain, array-record and
# portpicker, which lm no longer uses) are removed before downloading. The
# whole .whl/ folder travels with the working tree (64 MiB in all), so the script fails if .whl/ exceeds 64 MiB.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

PYTHON=${PYTHON:-python3}
LIMIT_BYTES=$((64 * 1024 * 1024))
WHEELS=(
    jax-triton==0.3.1
)

# A wheel's file name starts with its distribution name, normalised: lower case, runs of -_. as "_".
norm() { printf '%s' "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }

mkdir -p .whl
RETIRED=(grain array-record portpicker)  # carried before; a stale wheel would still be installed on the device
for spec in "${WHEELS[@]}" "${RETIRED[@]}"; do
    name=$(norm "${spec%%==*}")
    for f in .whl/*.whl; do
        [[ -f $f ]] || continue
        base=$(basename "$f")
        if [[ $(norm "${base%%-*}") == "$name" ]]; then
            echo "removing old .whl/$base"
            rm -f -- "$f"
        fi
    done
done

"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "${WHEELS[@]}"

# Every pinned wheel is there, exactly once, with a tag the device's CPython 3.12 accepts.
status=0
for spec in "${WHEELS[@]}"; do
    name=$(norm "${spec%%==*}") version=${spec##*==}
    matches=()
    for f in .whl/*.whl; do
        base=$(basename "$f")
        if [[ $(norm "${base%%-*}") == "$name" ]]; then matches+=("$base"); fi
    done
    if [[ ${#matches[@]} -ne 1 ]]; then
        echo "error: expected one wheel of $name in .whl/, found ${#matches[@]}: ${matches[*]:-none}" >&2
        status=1
        continue
    fi
    IFS=- read -r _ wver wpy wabi _ <<<"${matches[0]%.whl}"
    if [[ $wver != "$version" ]]; then
        echo "error: ${matches[0]} is not version $version" >&2; status=1
    fi
    if [[ ! $wpy =~ (^|\.)(py3|cp312)(\.|$) || ! $wabi =~ (^|\.)(none|abi3|cp312)(\.|$) ]]; then
        echo "error: ${matches[0]} is not for CPython 3.12" >&2; status=1
    fi
done
# No package may appear twice in .whl/ (the device installs .whl/*.whl), pinned here or not.
dups=$(for f in .whl/*.whl; do b=$(basename "$f"); norm "${b%%-*}"; echo; done | sort | uniq -d)
if [[ -n $dups ]]; then
    echo "error: more than one wheel of: $dups" >&2
    status=1
fi
[[ $status -eq 0 ]] || exit 1

echo
echo "wheels in .whl/:"
total=0
for f in .whl/*.whl; do
    size=$(stat -c %s "$f")
    total=$((total + size))
    printf '  %10d  %s\n' "$size" "$(basename "$f")"
done
awk -v t="$total" -v l=$((LIMIT_BYTES / 1048576)) 'BEGIN { printf "total: %d bytes (%.2f MiB) of a %d MiB limit\n", t, t / 1048576, l }'
if ((total > LIMIT_BYTES)); then
    echo "error: .whl/ holds $total bytes, over the 64 MiB that may travel with the working tree" >&2
    exit 1
fi
