"""Traffic simulators for the demo lab, the tests and standalone use (tools/feedsim, tools/fixsim).

* :mod:`.feeds`: market-data generators (Nasdaq ITCH 5.0 over MoldUDP64, a CME-like MDP 3.0
  channel, Cboe PITCH) around a shared random-walk mid per symbol, a paced :class:`~.feeds.FeedSender`
  with scheduled gap / duplicate-burst / stall injection, and :func:`~.feeds.replay_pcap`.
* :mod:`.fix`: a FIX 4.4 order gateway (acceptor) and a trading client (initiator).

Everything here is bounded (rates, counts, durations, buffers) and stops cleanly. Nothing imports
bcc; namespaces are entered through :mod:`..kernel.netlab` (pyroute2) only when asked for.
"""
from .feeds import (MAX_DURATION_S, MAX_PACKETS, MAX_RATE, FeedSender, Injection, ItchGenerator,
                    Mdp3Generator, MidWalk, PitchGenerator, replay_pcap)
from .fix import FixClient, FixGateway, Spike

__all__ = ["FeedSender", "Injection", "ItchGenerator", "Mdp3Generator", "PitchGenerator", "MidWalk",
           "replay_pcap", "FixGateway", "FixClient", "Spike", "MAX_RATE", "MAX_PACKETS", "MAX_DURATION_S"]
