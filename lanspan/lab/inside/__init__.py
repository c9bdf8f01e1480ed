"""What the lab runs inside its namespaces, each as `python -m lanspan.lab.inside.<tool>`.

- `prober`: a constant-rate ICMP echo prober in a guest (outages, cold start);
- `vlantap`: VLAN sub-interfaces of a trunk guest, as TAP devices;
- `impairer`: the userspace underlay impairer in the internet core.

They import nothing of the lab's orchestration (runner, checks, commands): the
orchestration starts them and reads what they print.
"""
