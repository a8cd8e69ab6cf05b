"""The relay, sans I/O: one room, its members' sessions and the handshake that admits them.

``core.RelayCore`` is the endpoint a shell drives (datagrams and ``now`` in, datagrams out,
timers exposed). It coordinates parts that each hold one idea: ``gate`` (HELLO, CHALLENGE,
JOIN, cookies and the per-host budgets), ``sessions`` (the session table, each member's
lifecycle and timers), ``paths`` (address migration and validation), ``room`` (membership,
nicknames, fan-out, requests) and ``room_log`` (the room's numbered events: sequence, epoch,
history, replay). ``config`` holds what an operator sets and what the relay counts; ``events``
what it reports; ``outbox`` where the parts queue datagrams and reports for the shell.
"""
