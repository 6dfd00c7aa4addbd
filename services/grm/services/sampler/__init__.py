"""A critique sampler pod: CritiqueService (`service`) over grm.scoring.critique, wired by
`main` through grm.services.bootstrap."""
