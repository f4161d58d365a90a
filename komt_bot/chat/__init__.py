"""What every chat surface shares: the ask flow, the reply editor, sinks and adapter presence."""
