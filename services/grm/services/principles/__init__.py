"""The principle generator: PrincipleService (`service`) over grm.scoring.principles, wired by
`main` through grm.services.bootstrap."""
