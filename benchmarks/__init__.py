"""Benchmarks of bgad-lite: ``python -m benchmarks [--quick] [--only ...] [--out ...]``.

Sections (each one module):

- ``accuracy``    unsupervised / bgad / naive_push on the embedded textures x 3 seeds
                  (and on the real ``bsdata`` fixture: section ``bsdata``);
- ``sensitivity`` bgad over beta, tau and the number of labelled anomalies k;
- ``speed``       end-to-end ``bgad-lite run``, cached features vs the official
                  backbone-every-epoch design, flow-training throughput vs matmul peak;
- ``aupro``       the exact vectorised AUPRO vs an official-style 1000-threshold loop;
- ``scaling``     time and memory as training images and image size grow;
- ``peers``       anomalib's PaDiM and PatchCore on the same splits, images and weights
                  (only where anomalib is installed: ``pip install anomalib==2.7.0``).

``python -m benchmarks.options '{"boundary": "fixed"}'`` measures one setting against the
defaults' runs in ``benchmarks/results`` (unsupervised and bgad, every data set and seed).

Every number in ``benchmarks/RESULTS.md`` is measured by the run that wrote it;
each table carries the date and the machine.
"""

import bgad_lite  # noqa: F401,E402  (sets OMP_WAIT_POLICY before any benchmark imports torch)

SECTIONS = ("accuracy", "bsdata", "sensitivity", "speed", "aupro", "scaling", "peers")
