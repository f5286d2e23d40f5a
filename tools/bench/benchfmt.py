"""What every benchmark shares: the best-of-N timer and the result row of ARCHITECTURE.md's
benchmark format ({"bench", "unit", "ours", "peer", "peer_value", "ratio", "better"}), plus "backend":
which of our decoder backends ran ("native" or "python"; HFTPF_NO_NATIVE=1 selects the latter)."""
import time


def backend() -> str:
    """The active decoder backend (hft_packetfilter._accel), for every row."""
    from hft_packetfilter import _accel

    return _accel.backend()


def best_time(fn, repeat: int) -> float:
    """The fastest of `repeat` calls of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def row(bench: str, unit: str, ours: float, peer: str, peer_value, reason: str = "", note: str = "",
        better: str = "higher", **extra) -> dict:
    """One comparison; a missing peer has peer_value None and says why in `reason`."""
    r = {"bench": bench, "unit": unit, "ours": round(ours), "peer": peer,
         "peer_value": None if peer_value is None else round(peer_value),
         "ratio": None if not peer_value else round(ours / peer_value, 3), "better": better,
         "backend": backend()}
    r.update(extra)
    if reason:
        r["reason"] = reason
    if note:
        r["note"] = note
    return r
