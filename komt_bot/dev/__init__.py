"""Developer tools that are more than one command: the soak harness (:mod:`.soak`) and its parts."""
