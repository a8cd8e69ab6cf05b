"""A member's session with a relay, sans I/O, split by idea.

``session`` is the endpoint the driver and the simulator talk to and routes to the parts;
``states`` holds the (state, trigger) table and ``lifecycle`` what each trigger does;
``joining`` is the handshake side (HELLO/JOIN retries, cookies, Noise initiators, REJECT
binding, resume proof, rejoin backoff); ``uplink`` the current link (adoption, authentication,
liveness); ``ledger`` the member's own messages until the relay answers them; ``cursor`` the
room's sequence numbers across links; ``room`` the member's view of the room; ``config`` the
settings, counters and errors they share.
"""
