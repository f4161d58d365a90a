"""Slack: mentions, DMs, threads and ``/komt`` through slack-bolt (Socket Mode or the Events API over HTTP)."""

from adapters.slack.app import serve

__all__ = ["serve"]
