"""bjexp: BiomedJourney experiments."""
