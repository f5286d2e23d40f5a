#!/usr/bin/env python3
"""Watch one venue live (root): the seed's first example.

    sudo .venv/bin/python examples/basic_monitoring.py eth0 --host 10.0.0.5 --ports 4001 9001
"""
import argparse
import time

from hft_packetfilter import ExchangeConfig, HFTAnalyzer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("interface")
    ap.add_argument("--netns", help="the interface's network namespace, if any")
    ap.add_argument("--host", default="10.0.0.5")
    ap.add_argument("--ports", type=int, nargs="+", default=[4001, 9001])
    ap.add_argument("--protocol", default="FIX/TCP")
    ap.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args(argv)
    with HFTAnalyzer() as analyzer:
        analyzer.add_exchange(ExchangeConfig(name="NYSE", host=a.host, ports=a.ports, protocol=a.protocol,
                                             latency_target_us=500))
        analyzer.start_monitoring(a.interface, netns=a.netns)
        time.sleep(a.seconds)
        metrics = analyzer.get_live_metrics()
        print(f"NYSE: {metrics.nyse.rx_packets} packets, latency {metrics.nyse.latency_us} us, "
              f"data quality {metrics.nyse.data_quality_score}")
        return metrics


if __name__ == "__main__":
    main()
