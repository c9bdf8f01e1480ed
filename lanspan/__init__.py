"""lanspan: VLAN segments stretched over datacenters as one encrypted switch."""

__version__ = "0.1.0"
