#!/usr/bin/env bash
# What `make setup` costs on a fresh virtualenv with an empty pip cache.
#
#   benchmarks/setup_cost.sh CLONE_DIR   (a clone of the repository; its .venv is deleted and rebuilt)
#
# Prints wall seconds, the peak size of pip's temporary directories (where an isolated
# build environment unpacks the torch it compiles against), the size of what pip fetched
# from the package index (its cache), and the virtualenv's size.
set -u
cd "$1" || exit 2
rm -rf .venv
PIP_CACHE_DIR=$(mktemp -d); export PIP_CACHE_DIR
peak_file=$(mktemp); echo 0 > "$peak_file"
( while sleep 2; do
    m=$(du -sm "${TMPDIR:-/tmp}"/pip-* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    [ "$m" -gt "$(cat "$peak_file")" ] && echo "$m" > "$peak_file"
  done ) &
poller=$!
t0=$(date +%s)
make setup > setup-cost.log 2>&1; rc=$?
t1=$(date +%s)
kill $poller
printf 'make setup: exit %s, %s s, pip temporary directories peaked at %s MB, fetched %s MB, .venv %s MB (%s)\n' \
  "$rc" $((t1 - t0)) "$(cat "$peak_file")" "$(du -sm "$PIP_CACHE_DIR" | cut -f1)" "$(du -sm .venv | cut -f1)" \
  "$(git -C "$1" rev-parse --short HEAD 2>/dev/null)"
rm -rf "$PIP_CACHE_DIR" "$peak_file"
