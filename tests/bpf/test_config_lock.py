"""hftpf_config is one value several processes change fields of (the agent, CLI processes on the
pins): every read-modify-write holds the probe's config lock, so none loses another's change (root)."""
import os
import time

from hft_packetfilter import abi, config

CFG = "exchanges:\n  - {name: FEED, host: 192.0.2.2, ports: [26400], protocol: ITCH/MoldUDP64}\n"
N = 300


def _writer(maps, kind: str) -> None:
    """In a forked child: N changes of its own field, each also starting a new allow-list generation."""
    try:
        for i in range(N):
            if kind == "flags":
                maps._set_flags(abi.CFG_KILL_FLOWS if i % 2 == 0 else 0, abi.CFG_KILL_FLOWS, new_allow_gen=True)
            else:
                maps.set_mode(abi.Mode.MONITOR if i % 2 == 0 else abi.Mode.ENFORCE)
                maps._set_flags(0, 0, new_allow_gen=True)
        os._exit(0)
    except BaseException:           # noqa: BLE001 - a child reports by its exit status only
        os._exit(1)


def _race(maps):
    start = maps.m[abi.MAP_CONFIG].lookup(0).allow_gen
    pids = []
    for kind in ("flags", "mode"):
        pid = os.fork()
        if pid == 0:
            _writer(maps, kind)
        pids.append(pid)
    deadline = time.monotonic() + 60
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                raise AssertionError("a config writer did not finish in 60 s")
            time.sleep(0.01)
    cfg = maps.m[abi.MAP_CONFIG].lookup(0)
    return cfg, cfg.allow_gen - start


def test_two_processes_changing_the_config_lose_nothing(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.loader import Probe

    p = Probe(config.loads(CFG), "lo", filter_mode="monitor")
    p.load()
    try:
        maps = p.maps
        maps.lock_path = str(tmp_path)        # stands for the pin directory (a flock on a directory)
        cfg, gens = _race(maps)
        # every generation each writer started is there, and each writer's last word stands
        assert gens == 2 * N
        assert cfg.flags & abi.CFG_KILL_FLOWS == 0 and cfg.mode == int(abi.Mode.ENFORCE)
    finally:
        p.detach()
