"""`bst_rt.synth`: the deterministic synthetic corpus (audio, metadata, stand-in embeddings) that stands in for the
real BSD10k / BSD35k-CS / evaluation data in tests, benches and the demo. It imports only `bst_rt.runtime` (a test
enforces it), so the corpus is a subsystem of its own rather than part of training. Entry point: `corpus.write_corpus`
(`bst-train synth`)."""
