"""lanspan.gateway: pure renderers for what a gateway node runs.

keepalived.conf (VRRPv3 for segment gateways and floating addresses),
dnsmasq configuration (DHCPv4, router advertisements / DHCPv6), the nftables
ruleset filtering between segments, the forwarding-settings check, and the
typed status of all of it. No I/O here: `lanspan.agent.services` writes the
files, runs the daemons and feeds their reports back.
"""

from lanspan.gateway.keepalived import KeepalivedConfig, instance_name, priority, render_keepalived

__all__ = ["KeepalivedConfig", "instance_name", "priority", "render_keepalived"]
