"""Stage 2: structured-latent flow, multiview feature injection, mesh and Gaussian decoders."""
