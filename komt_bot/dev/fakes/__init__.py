"""Fake platforms on 127.0.0.1 that speak the real wire protocols: the fake Slack (:mod:`.slack`), the rate limits
the fakes enforce (:mod:`.platform_limits`), and how they listen (:mod:`.local_http`).

The tests use them, and so does ``komt-bot dev soak --via slack``; they need the ``slack`` extra (aiohttp).
"""
