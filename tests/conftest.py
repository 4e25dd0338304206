
# Must run before anything imports torch: with torch's default (spinning) OpenMP
# threads, small flow steps on this 2-core CPU stall at random (~1.5 s, 2-100x
# slower); importing bgad_lite first sets a passive wait policy (bgad_lite.runtime).
import bgad_lite  # noqa: F401,E402
