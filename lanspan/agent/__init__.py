"""lanspan.agent: the running agent — it composes the node core, the I/O
adapters of `dataplane/` and the control/metrics servers.

`loop.Agent` is the one executor (read, feed the node, carry out its actions,
re-arm one timer); `command.agent` is `lanspan agent`; `early` attaches the
ports' interfaces before the agent's heavy imports (a cold start's frames are queued).
"""
