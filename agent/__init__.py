"""icv-edge-agent: in-vehicle edge agent for L2 driver-assistance monitoring and OTA."""

__version__ = "0.1.0"
