# Thin wrappers around scripts/dev.sh (the README's commands call the script directly).
.PHONY: setup run test protos
setup:
	scripts/dev.sh setup
run:
	scripts/dev.sh run
test:
	scripts/dev.sh test
protos:
	scripts/dev.sh protos
