"""Benchmark harness: compare chat relays on the same traffic, in the same run.

Every system under test (udpchat's reliable relay, a plain UDP forwarder, a TCP relay) is driven
by the same sender schedule and measured by the same receivers, so differences in the results
come from the systems and not from the measuring code.

A distribution of its own (``udpchat-bench``, in ``bench/`` of a udpchat checkout), not part of
the installed udpchat: ``udpchat bench`` and ``udpchat load`` import it when they run, and say
how to install it when it is missing. It also holds the load generator (``load``) and a bare
protocol client (``bareclient``) that the load generator and udpchat's tests build on.
"""
