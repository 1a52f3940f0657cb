"""PO-MPC in JAX + Equinox."""
