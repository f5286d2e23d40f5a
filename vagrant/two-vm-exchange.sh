#!/bin/sh
# On the exchange VM: 60 s of ITCH towards the lab VM (with a gap at 20 s) and a FIX gateway; on
# the lab VM run `tools/fixsim client --connect 192.168.56.20:9878 --orders 500 --rate 20` meanwhile.
set -eu
cd "$(dirname "$0")/.."
PY=/opt/hftpf-venv/bin/python
$PY tools/fixsim gateway --listen 192.168.56.20:9878 --ack-delay-us 200 --duration 70 &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT INT TERM
$PY tools/feedsim itch --dst 192.168.56.10:26477 --rate 1000 --duration 60 --gap 20:5
wait $GW
