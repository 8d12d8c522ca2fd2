"""bjexp: BiomedJourney experiments."""
import os

# OpenMP threads that find no work sleep instead of spinning, unless the environment chose a policy. libgomp reads
# this once, when torch loads it, hence here. On a CPU shared with another job, spinning threads made a training
# step several times slower (benchmarks/results/threads.md). Thread counts: bjexp/threads.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
