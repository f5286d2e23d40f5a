"""hft_packetfilter: an eBPF/XDP probe for trading networks (CLI: hftpf-agent).

Python API (the seed's): HFTAnalyzer, ExchangeConfig, ProductionConfig -- see api.py."""
__version__ = "0.1.0"

from .api import ExchangeConfig, HFTAnalyzer, ProductionConfig  # noqa: E402

__all__ = ["HFTAnalyzer", "ExchangeConfig", "ProductionConfig", "__version__"]
