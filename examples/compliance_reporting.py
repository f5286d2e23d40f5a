#!/usr/bin/env python3
"""Write and verify the audit trail of a capture's order flow (no root).

    .venv/bin/python examples/compliance_reporting.py capture.pcap -c cfg.yaml --audit-dir /tmp/audit
"""
import argparse

from hft_packetfilter import HFTAnalyzer, ProductionConfig
from hft_packetfilter.sinks.audit import default_key_path, load_key, verify


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture")
    ap.add_argument("-c", "--config")
    ap.add_argument("--audit-dir", default="/tmp/hftpf-audit")
    ap.add_argument("--key", help="HMAC key file (0600; created if missing; default /etc/hftpf/audit.key as root)")
    a = ap.parse_args(argv)
    analyzer = HFTAnalyzer(config=ProductionConfig.from_file(a.config) if a.config else None)
    analyzer.enable_compliance_monitoring(regulations=["MiFID_II", "Reg_NMS"], audit_trail=True,
                                          real_time_alerts=True, audit_dir=a.audit_dir, audit_key=a.key)
    doc = analyzer.replay(a.capture)
    result = verify(a.audit_dir, load_key(a.key or default_key_path(), create=False))
    print(f"audit trail in {a.audit_dir}: {'verified' if result.ok else 'DAMAGED'}, {result.records} records")
    return doc, result


if __name__ == "__main__":
    main()
