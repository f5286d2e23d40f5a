"""hft_packetfilter: an eBPF/XDP probe for trading networks (CLI: hftpf-agent)."""
__version__ = "0.1.0"
