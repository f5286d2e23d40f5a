"""Deployment files are checked against the code: the systemd unit verifies, and every CLI argument,
config key and port in the unit, Dockerfile and Kubernetes manifests exists in the agent."""
import shutil
import sys
import subprocess
from pathlib import Path

import pytest
import yaml

from hft_packetfilter import config
from hft_packetfilter.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tools" / "systemd" / "hftpf-agent@.service"


def test_systemd_unit_verifies(tmp_path):
    exe = shutil.which("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze not installed")
    # the unit points at /opt/hftpf; verify a copy pointing at this checkout's venv
    text = UNIT.read_text().replace("/opt/hftpf/.venv/bin/hftpf-agent", str(ROOT / ".venv" / "bin" / "hftpf-agent"))
    (tmp_path / "hftpf-agent@.service").write_text(text)
    (tmp_path / "hftpf-agent@eth0.service").symlink_to(tmp_path / "hftpf-agent@.service")
    r = subprocess.run([exe, "verify", "--man=no", str(tmp_path / "hftpf-agent@eth0.service")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _exec_args(line: str):
    return line.split("hftpf-agent", 1)[1].split()


def test_unit_command_line_parses():
    line = [l for l in UNIT.read_text().splitlines() if l.startswith("ExecStart=")][0]
    args = build_parser().parse_args([a.replace("%i", "eth0") for a in _exec_args(line)])
    assert args.func.__name__ == "cmd_attach" and args.quiet


def test_k8s_manifests_match_the_code():
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "hftpf.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "DaemonSet", "Service", "ServiceMonitor"}
    cfg = config.loads(kinds["ConfigMap"]["data"]["production.yaml"], "configmap")  # every key is valid
    port = cfg.monitoring.listen[1]
    c = kinds["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert c["ports"][0]["containerPort"] == port
    assert kinds["Service"]["spec"]["ports"][0]["port"] == port
    args = build_parser().parse_args(c["args"])
    assert args.func.__name__ == "cmd_attach"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/sys/fs/bpf", "/lib/modules", "/etc/hftpf", "/run/hftpf"} <= mounts


def test_dockerfile_exposes_the_default_metrics_port():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"EXPOSE {config.default().monitoring.listen[1]}" in text
    assert "--system-site-packages" in text and "python3-bpfcc" in text


def test_vagrant_two_vm_lab_is_consistent():
    """The Vagrantfile's addresses, the lab config and the two helper scripts agree; the config
    loads, the scripts parse, and every attach/feedsim/fixsim flag they use exists."""
    import re

    vf = (ROOT / "vagrant/Vagrantfile").read_text()
    lab_ip = re.search(r'LAB_IP = "([\d.]+)"', vf).group(1)
    ex_ip = re.search(r'EXCHANGE_IP = "([\d.]+)"', vf).group(1)
    assert 'vm.define "lab"' in vf and 'vm.define "exchange"' in vf
    cfg = config.load(str(ROOT / "vagrant/two-vm.yaml"))
    assert {str(h.network_address) for e in cfg.exchanges for h in e.hosts} == {ex_ip}
    attach = (ROOT / "vagrant/two-vm-attach.sh").read_text()
    exch = (ROOT / "vagrant/two-vm-exchange.sh").read_text()
    assert lab_ip in attach and f"{lab_ip}:26477" in exch and f"{ex_ip}:9878" in exch
    ports = {p for e in cfg.exchanges for p in e.ports}
    assert {26477, 9878} <= ports
    for script in ("two-vm-attach.sh", "two-vm-exchange.sh"):
        r = subprocess.run(["sh", "-n", str(ROOT / "vagrant" / script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    args = build_parser().parse_args(["attach", "eth1", "-c", "vagrant/two-vm.yaml", "--xdp-mode", "generic"])
    assert args.xdp_mode == "generic"
    for tool, argv in (("feedsim", ["itch", "--dst", f"{lab_ip}:26477", "--rate", "1000", "--duration", "60",
                                    "--gap", "20:5", "--help"]),
                       ("fixsim", ["gateway", "--listen", f"{ex_ip}:9878", "--ack-delay-us", "200", "--duration",
                                   "70", "--help"])):
        r = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *argv],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout, r.stderr
