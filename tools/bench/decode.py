#!/usr/bin/env python3
"""Decoder throughput against named peers, measured in the same run (issue 5):
FIX stream parsing (tools/bench/decode_fix.py: quickfix, simplefix, tshark, a naive split) and
ITCH 5.0 in MoldUDP64 (tools/bench/decode_itch.py: plain struct, dpkt, itch-book).

    .venv/bin/python tools/bench/decode.py [--quick] [--json]

Peers that are not installed are printed with "peer_value": null and the reason."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small inputs: proves the benchmark runs (CI)")
    ap.add_argument("-j", "--json", action="store_true", help="one JSON object per comparison")
    a = ap.parse_args(argv)
    import decode_fix
    import decode_itch

    rows = decode_fix.run(quick=a.quick) + decode_itch.run(quick=a.quick)
    for r in rows:
        if a.json:
            print(json.dumps(r))
        else:
            pv = "n/a (" + str(r.get("reason")) + ")" if r.get("peer_value") is None else f"{r['peer_value']:,.0f}"
            ratio = "" if r.get("ratio") is None else f"  ratio {r['ratio']:.2f}"
            print(f"{r['bench']:<32} [{r.get('backend')}] ours {r['ours']:,.0f} {r['unit']}  {r['peer']} {pv}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
