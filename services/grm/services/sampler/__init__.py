"""A critique sampler pod: CritiqueService (`service`; its SampleChannel calls: `channel`)
over grm.scoring.critique, wired by `main` through grm.services.bootstrap."""
