#!/bin/bash
# Re-cut the vLLM wheel parts that ../shared/device-vllm/stage.sh wrote (.vllm-wheels/p*/part*, 60 MiB
# each) into smaller ones. A device call carries one part AND the whole working tree, and the two
# together must stay under 64 MiB: with the tree at about 7 MiB, a 60 MiB part no longer fits.
# The parts keep their global names (part00, part01, ...), so receive.sh and env.sh (which cat
# /tmp/vllm-parts/part* in name order) need no change. The joined bytes are checked unchanged.
#
#   bash bench/gpu/resplit_wheels.sh [MiB]      (from the repo root; default 48)
#
# It prints the number of parts and the largest part plus the tracked tree, against the limit.
set -euo pipefail
size=${1:-48}
d=.vllm-wheels
parts() { for f in "$d"/p*/part*; do echo "$(basename "$f") $f"; done | sort | cut -d' ' -f2; }
[ -n "$(parts)" ] || { echo "no $d/p*/part* here: run ../shared/device-vllm/stage.sh first"; exit 2; }
before=$(cat $(parts) | sha256sum | cut -d' ' -f1)
tmp=$d/resplit.tmp
rm -rf "$tmp" && mkdir -p "$tmp"
cat $(parts) | split -b "${size}M" -d - "$tmp/part"
rm -rf "$d"/p[0-9]*
i=0
for f in "$tmp"/part*; do mkdir -p "$d/p$i"; mv "$f" "$d/p$i/"; i=$((i + 1)); done
rmdir "$tmp"
after=$(cat $(parts) | sha256sum | cut -d' ' -f1)
[ "$before" = "$after" ] || { echo "joined parts changed: $before -> $after"; exit 1; }
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
largest=$(du -b "$d"/p*/part* | sort -n | tail -1 | cut -f1)
echo "$i parts (p0..p$((i - 1))), joined sha256 unchanged"
echo "largest part + tracked tree = $(( (largest + tree) >> 20 )) MiB (limit 64 MiB per call)"
