"""Equivariant linear operators on gridded scalar, vector and tensor fields.

A linear operator that commutes with translations and rotations is a convolution with a kernel
``K(r) = sum_t phi_t(|r|) U_t(r / |r|)``: scalar radial profiles times fixed unit fields
(:mod:`.angular`). :class:`RadialOperator` applies such a kernel on a periodic or bounded grid,
differentiably in torch; :mod:`.profiles` holds the profiles (finite differences, heat kernel,
Poisson Green's function, learnable hat-function expansions) and :mod:`.builtins` the named
operators. Field layouts and kinds are those of :mod:`roteq_param.symmetry`. Solver-free.
"""

from .angular import n_terms, term_names, unit_fields
from .builtins import (curl, divergence, gaussian_diffusion, gradient, green_field, green_potential, laplacian,
                       neural, skew_gradient, symmetric_gradient, tensor_divergence)
from .operator import RadialOperator
from .profiles import AxisStencil, HeatKernel, PoissonGreen, RadialBasisProfile, RadialProfile

__all__ = ["RadialOperator", "RadialProfile", "AxisStencil", "HeatKernel", "PoissonGreen", "RadialBasisProfile",
           "n_terms", "term_names", "unit_fields",
           "gradient", "skew_gradient", "divergence", "curl", "laplacian", "symmetric_gradient", "tensor_divergence",
           "gaussian_diffusion", "green_potential", "green_field", "neural"]
