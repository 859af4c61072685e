"""Carriers: one module per carrier, each exposing the same names."""
