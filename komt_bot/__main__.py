"""``python -m komt_bot`` is ``komt-bot``."""

from komt_bot.cli import main

main()
