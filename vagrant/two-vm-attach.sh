#!/bin/sh
# On the lab VM: attach the probe to the NIC that carries 192.168.56.10 (vagrant/Vagrantfile).
set -eu
cd "$(dirname "$0")/.."
IFACE=$(ip -o -4 addr show to 192.168.56.10 | awk '{print $2; exit}')
[ -n "$IFACE" ] || { echo "two-vm-attach: no interface has 192.168.56.10 (is this the lab VM?)" >&2; exit 1; }
exec .venv/bin/hftpf-agent attach "$IFACE" -c vagrant/two-vm.yaml --xdp-mode generic "$@"
