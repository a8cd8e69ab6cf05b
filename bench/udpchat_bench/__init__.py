"""Benchmark harness: compare chat relays on the same traffic, in the same run.

Every system under test (udpchat's reliable relay, a plain UDP forwarder, a TCP relay) is driven
by the same sender schedule and measured by the same receivers, so differences in the results
come from the systems and not from the measuring code.
"""
