# `make mutation`: mutation testing of the core's rules (tools/mutation.py). Not part of
# `make test`: it runs each module's unit tests once per mutant, about six minutes on 2 cores.
# `nice` because it keeps both cores busy; MUTATION_ARGS narrows it, e.g. MUTATION_ARGS=events.

.PHONY: mutation
mutation: $(DEV_STAMP)
	nice -n 10 $(BIN)/python tools/mutation.py $(MUTATION_ARGS)
