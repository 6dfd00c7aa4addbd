"""The real embedded model (SmolLM2-135M through llama.cpp); marked `model`."""
