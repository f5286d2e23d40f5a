#!/usr/bin/env python3
"""Load and check a production config, as the seed's ProductionConfig example does (no root).

    .venv/bin/python examples/production_setup.py configs/production.yaml
"""
import argparse

from hft_packetfilter import HFTAnalyzer, ProductionConfig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default="configs/production.yaml")
    a = ap.parse_args(argv)
    config = ProductionConfig.from_file(a.config)    # errors name the file, line and key
    analyzer = HFTAnalyzer(config=config, performance_mode="ultra_low_latency", logging_level="INFO",
                           metrics_export="prometheus")
    for ex in analyzer.effective_config().exchanges:
        print(f"{ex.name:<12} {ex.protocol:<16} {','.join(map(str, ex.hosts))} ports {list(ex.ports)}")
    return analyzer


if __name__ == "__main__":
    main()
