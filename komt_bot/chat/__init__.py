"""What every chat surface shares: the ask flow, the reply editor, sinks, Stop, reply tasks and adapter presence."""
