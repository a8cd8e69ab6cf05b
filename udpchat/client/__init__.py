"""A member's session with a relay, sans I/O, split by idea.

``session`` coordinates; ``states`` holds the (state, trigger) table that drives it;
``joining`` is the handshake side (HELLO/JOIN, Noise initiators, REJECT binding, resume proof,
reconnect backoff); ``ledger`` keeps the member's own messages until the relay answers them;
``cursor`` follows the room's sequence numbers across links; ``liveness`` decides when to ping
and when the relay is lost; ``config`` holds the settings, counters and errors they share.
"""
