"""bjexp: BiomedJourney experiments."""
# OpenMP's wait policy is left to libgomp (or the user's OMP_WAIT_POLICY): on an idle 2-core machine PASSIVE made
# the default training step 2.4x slower than the default policy (benchmarks/results/wait_policy.md). Thread counts:
# bjexp/threads.py.
