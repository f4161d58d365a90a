"""komt-bot: the komt Korean Llama-2 model in Slack and Discord, behind a Redis Streams job queue."""

__version__ = "0.1.0"
