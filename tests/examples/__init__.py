"""Worked examples of docs/extending.md: a new prior and a new policy objective, each one file."""
