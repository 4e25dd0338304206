import os

# Must run before anything imports torch: with torch's default (spinning) OpenMP
# threads, small flow steps on this 2-core CPU stall at random (~1.5 s, 2-100x
# slower); a passive wait policy removes the stalls (see METHOD.md, "Measured here").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
