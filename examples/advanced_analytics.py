#!/usr/bin/env python3
"""Offline analytics of a capture (no root): feed quality, orders, books, cross-venue.

    .venv/bin/python examples/advanced_analytics.py capture.pcap -c configs/example.yaml
"""
import argparse
import json

from hft_packetfilter import HFTAnalyzer, ProductionConfig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture")
    ap.add_argument("-c", "--config")
    a = ap.parse_args(argv)
    analyzer = HFTAnalyzer(config=ProductionConfig.from_file(a.config) if a.config else None)
    doc = analyzer.replay(a.capture)
    for name, feed in doc["feeds"].items():
        print(f"feed {name}: {feed['messages']} messages, {feed['gaps']} gaps, {feed['missing']} missing")
    for venue, o in doc["orders"].items():
        print(f"orders {venue}: {json.dumps(o)}")
    return doc


if __name__ == "__main__":
    main()
