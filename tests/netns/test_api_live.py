"""The seed's live example on a veth in namespaces (root): start_monitoring, feed traffic,
get_live_metrics, stop_monitoring, as a context manager; nothing left attached."""
import os
import time

from frames import moldudp64

NS_TX, NS_RX = "hftpf-p-tx", "hftpf-p-rx"
IF_TX, IF_RX = "hft-p-tx0", "hft-p-rx0"
TX_IP, RX_IP = "198.18.10.1", "198.18.10.2"


def test_seed_example_live(needs_kernel):
    from hft_packetfilter import ExchangeConfig, HFTAnalyzer
    from hft_packetfilter.kernel.loader import pin_dir
    from hft_packetfilter.kernel.netlab import Lab, Link, socket_in

    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{TX_IP}/24", NS_RX, IF_RX, f"{RX_IP}/24")]):
        with HFTAnalyzer() as analyzer:
            analyzer.add_exchange(ExchangeConfig(name="NYSE", host=TX_IP, ports=[4001, 9001],
                                                 protocol="ITCH/MoldUDP64", latency_target_us=500))
            analyzer.start_monitoring(IF_RX, netns=NS_RX)
            s = socket_in(NS_TX)
            for seq in list(range(1, 51)) + list(range(53, 101)):
                s.sendto(moldudp64(b"APILIVE001", seq, 1), (RX_IP, 9001))
            s.close()
            time.sleep(0.5)
            metrics = analyzer.get_live_metrics()
            assert metrics.nyse.rx_packets == 98
            assert (metrics.nyse.gaps, metrics.nyse.missing) == (1, 2)
            assert metrics.nyse.data_quality_score == round(100 * (1 - 20 / (98 + 20)), 2)  # misses weigh x10
        assert not os.path.exists(pin_dir(IF_RX, NS_RX))
