#!/bin/sh
# Stands in for `systemctl restart status-poller.service` in
# examples/status-page.toml: the real poller, once restarted, fetches the
# state of every service and rewrites status.json. This one writes a fixed
# "all operational" document, atomically (write, then rename), the way the
# real poller does so the page never serves half a file.
#
# mend runs it with the examples directory as working directory, without a
# shell of its own and with only PATH in the environment.
set -eu
dir=../target/demo/status
mkdir -p "$dir"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{"updated":"%s","services":{"api":"operational","web":"operational"}}\n' "$now" > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
echo "status-poller: restarted, wrote $dir/status.json at $now"
