"""Resolvers the SLURM launcher profiles (conf/hydra/launcher/slurm*.yaml) use to size jobs from the trainer config."""
from bjexp.slurm import register_resolvers

register_resolvers()
