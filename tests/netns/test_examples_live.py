"""examples/basic_monitoring.py, the seed's live example, on a veth in namespaces (root)."""
import runpy
import threading
import time
from pathlib import Path

from frames import moldudp64

ROOT = Path(__file__).resolve().parents[2]


def test_basic_monitoring_example(needs_kernel):
    from hft_packetfilter.kernel.netlab import Lab, Link, socket_in

    with Lab(["hftpf-e-tx", "hftpf-e-rx"], [Link("hftpf-e-tx", "hft-e-tx0", "198.18.11.1/24", "hftpf-e-rx",
                                                 "hft-e-rx0", "198.18.11.2/24")]):
        def feed():
            # send once the example's probe is attached (a fixed sleep lost the race on a loaded VM)
            from hft_packetfilter.kernel.loader import list_pinned

            deadline = time.monotonic() + 30
            while "hftpf-e-rx:hft-e-rx0" not in list_pinned() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            s = socket_in("hftpf-e-tx")
            for seq in range(1, 31):
                s.sendto(moldudp64(b"EXLIVE0001", seq, 1), ("198.18.11.2", 9001))
            s.close()

        t = threading.Thread(target=feed)
        t.start()
        main = runpy.run_path(str(ROOT / "examples" / "basic_monitoring.py"))["main"]
        metrics = main(["hft-e-rx0", "--netns", "hftpf-e-rx", "--host", "198.18.11.1", "--ports", "4001", "9001",
                        "--protocol", "ITCH/MoldUDP64", "--seconds", "3"])
        t.join()
        assert metrics.nyse.rx_packets == 30 and metrics.nyse.data_quality_score == 100.0
