"""Computer-vision helpers for the examples: image datasets, a differentiable affine
sampler and a spatial-transformer alignment model, and image grids."""
