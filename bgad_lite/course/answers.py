"""The answers of the course's concept questions, kept out of the notebooks.

A notebook cell shows a question and its options, ``exercises.quiz("02.Q3", question, options)``;
which option is right, and why each option is right or wrong, live here, so that the source of
a student copy does not give the answer away (the feedback after a click is the same as ever).
Keyed by option text, not by position: an option reworded in a notebook and not here makes
:func:`bgad_lite.course.exercises.quiz` raise, instead of marking the wrong one right.
"""

from __future__ import annotations

#: {quiz id: {"right": the right option's text, "why": {option text: explanation}}}
QUIZ_ANSWERS: dict[str, dict] = {
    '00.Q1': {  # Why can a single Gaussian not model the crescent?
        "right": 'its density is highest at the mean, which here lies in the empty middle of the ring',
        "why": {
            'its density is highest at the mean, which here lies in the empty middle of the ring':
                'Right: a Gaussian has one peak, at the mean; the crescent bends around its mean, so the peak falls where no normal point is.',
            'it has too many parameters for 400 points':
                'A 2-D Gaussian has five parameters; the trouble is its shape, not their number.',
            'a Gaussian cannot be fitted by maximum likelihood':
                'It can, in closed form (the mean and covariance of the points); notebook 01 does it per position.',
            'the crescent has no mean':
                'Every finite set of points has a mean; it just lies off the data here.',
        },
    },
    '00.Q2': {  # A normal training point lies exactly at l = b_n. Does the pull act on it?
        "right": 'yes: the pull runs over normals with l ≤ b_n, so it is in the mean and gets a gradient',
        "why": {
            'yes: the pull runs over normals with l ≤ b_n, so it is in the mean and gets a gradient':
                'Right: its term b_n − l is 0, but the derivative of the mean with respect to its l is −1/(number selected), not 0.',
            'no: its term b_n − l is 0, so the pull ignores it':
                'A zero term is not a zero gradient: b_n is a constant (detached), so the point still gets −1/(number selected).',
            'only if it is also above b_a':
                'Every normal point on b_n is above b_a = b_n − τ; b_a concerns only the push of anomalies.',
            'only with focal weighting':
                'Focal weighting scales the terms; which points are selected does not depend on it.',
        },
    },
    '00.Q3': {  # Both the naive push and BG-SPP lower l at the labelled points. What does only BG-SP
        "right": 'it stops pushing a point once its l is below b_a, and pulls normals below b_n back up',
        "why": {
            'it stops pushing a point once its l is below b_a, and pulls normals below b_n back up':
                'Right: the push is bounded by b_a and the pull keeps the normals above b_n; the naive push never stops.',
            'it pushes the labelled points harder':
                'It pushes only while a point is above b_a; below it, the point costs nothing.',
            'it pulls the labelled anomalies towards each other':
                'That is what "semi" rules out: only the normals are pulled together.',
            'it sets b_n from the labelled anomalies':
                'b_n comes from the normals alone; the anomalies never move it.',
        },
    },
    '00.Q4': {  # Here C = 2, N = 10, τ = 0.1. How does the density on the b_a contour compare with
        "right": 'lower by a factor e^(C·N·τ) = e² ≈ 7.4',
        "why": {
            'lower by a factor e^(C·N·τ) = e² ≈ 7.4':
                'Right: l = log p(x) / (C·N), so a step τ in l is C·N·τ = 2 nats of log p(x).',
            'lower by τ = 0.1':
                'τ is measured on the l scale, logp per dimension divided by N, not in density.',
            'lower by a factor N = 10':
                'N divides the log-likelihood; in density it enters the exponent, with C and τ.',
            'it depends on β':
                'β places b_n; the margin between b_n and b_a is τ whatever β is.',
        },
    },
    '01.Q1': {  # A 128-px image goes through the backbone. How many fibers does level 0 (stride 4
        "right": '32 × 32 = 1,024 — one per 4 × 4-pixel cell',
        "why": {
            '3 — one per level':
                'The levels are separate maps; each has many fibers.',
            '128 × 128 = 16,384 — one per pixel':
                'Level 0 has stride 4, so one fiber describes a 4 × 4-pixel cell, not one pixel.',
            '32 × 32 = 1,024 — one per 4 × 4-pixel cell':
                'Right: 128 / 4 = 32 rows and columns, one fiber of C_0 numbers at each position.',
            'C_0 — one per channel':
                'C_0 is the length of each fiber, not the number of fibers.',
        },
    },
    '01.Q2': {  # For a Gaussian N(μ, Σ), what is ½ (x − μ)ᵀ Σ⁻¹ (x − μ)?
        "right": 'half the squared Mahalanobis distance: −log N(x; μ, Σ) up to a constant',
        "why": {
            'the Mahalanobis distance of x':
                'The Mahalanobis distance is the square root of (x − μ)ᵀ Σ⁻¹ (x − μ); this is half its square.',
            'half the squared Mahalanobis distance: −log N(x; μ, Σ) up to a constant':
                'Right: −log N(x; μ, Σ) = ½ d_M² + ½ log det(2πΣ), and the last term does not depend on x.',
            'the log-density log N(x; μ, Σ)':
                'It has the opposite sign and lacks the constant ½ log det(2πΣ).',
            'half the squared Euclidean distance ‖x − μ‖²/2':
                'Only when Σ = I; in general Σ⁻¹ rescales and rotates the axes.',
        },
    },
    '01.Q3': {  # Why are the features computed once and cached instead of in every training epoch
        "right": 'the backbone is frozen, so its features never change',
        "why": {
            'the backbone is frozen, so its features never change':
                'Right: the same image always gives the same features, so computing them again is wasted time.',
            'the cache makes the features more accurate':
                'The cached values are exactly those a fresh extraction gives (section 2 checks it).',
            'the flows cannot be trained on a GPU':
                'They can; caching helps on a GPU too.',
            'the paper prescribes it':
                "The official code runs the backbone every epoch; caching is this library's choice.",
        },
    },
    '01.Q4': {  # Why does BGAD model fibers rather than whole images or raw pixels?
        "right": 'a fiber describes one local patch, so a low density points at where the defect is, and every image gives many samples',
        "why": {
            'pixels are too many numbers for a flow':
                'Memory is one concern, but the main reason is locality and many samples per image.',
            'a fiber describes one local patch, so a low density points at where the defect is, and every image gives many samples':
                'Right: each image gives H_j × W_j samples per level, and a score per position is an anomaly map for free.',
            'fibers are always Gaussian':
                'They are not; that is why a single Gaussian is only a first attempt.',
            'it does not need the masks then':
                'The masks are still needed to label anomalous fibers in phase 2.',
        },
    },
    '02.Q1': {  # Why is the flow conditioned on the fiber's position?
        "right": 'because the density of normal fibers differs from place to place (borders, object parts)',
        "why": {
            'so that it can invert itself':
                'Invertibility comes from the coupling blocks, whatever the condition.',
            'because the density of normal fibers differs from place to place (borders, object parts)':
                'Right: a normal fiber at the border or on a screw head looks different from one in the middle; the condition lets one flow model all of them.',
            'to make training faster':
                'It adds P inputs to every subnet; it does not speed anything up.',
            "because the paper's backbone needs it":
                'The backbone is unchanged; the condition only enters the flow.',
        },
    },
    '02.Q2': {  # Why does BGAD divide log p(x) by C?
        "right": 'so that levels with different channel counts C_j give comparable numbers',
        "why": {
            'to make the flow invertible':
                'Dividing a number after the fact cannot change invertibility.',
            'so that levels with different channel counts C_j give comparable numbers':
                "Right: log p(x) grows with the dimension; per dimension, the three levels share one scale, and so can the boundary's β and τ.",
            'because log p(x) is always negative':
                'It is not always negative, and its sign is not the point.',
            'to avoid overflow in exp':
                'The maps subtract a reference m_j before exp; that is what prevents overflow.',
        },
    },
    '02.Q3': {  # What does −log σ(logp) do that −logp does not?
        "right": 'it saturates: fibers with logp ≫ 0 stop pulling on the model',
        "why": {
            'it saturates: fibers with logp ≫ 0 stop pulling on the model':
                'Right: for large logp, −log σ(logp) → 0, while −logp keeps rewarding ever higher likelihoods.',
            'it is exactly the same loss':
                'For logp ≪ 0 they agree; for logp ≫ 0 they do not.',
            'it pushes anomalies down':
                'Phase 1 sees normal fibers only; pushing is phase 2.',
            'it makes the loss negative':
                '−log σ(v) is always positive.',
        },
    },
    '02.Q4': {  # One level sits 6 nats below m_j: what does it add to A = Σ d_j, and to S = Σ p_j?
        "right": '6 to A, and it lowers S by 1 − e⁻⁶, less than 1',
        "why": {
            '6 to A, and it lowers S by 1 − e⁻⁶, less than 1':
                'Right: d_j = 6 enters A as it is; p_j = e⁻⁶ ≈ 0.002 instead of 1, so S drops by 0.998 — as much as a level 6 nats out as one 60 nats out.',
            'at most 1 to each':
                'That is the paper\'s sum only: a likelihood lies between 0 and 1 here, so S changes by less than 1; the deficits are not capped.',
            '6 to each':
                'S sums likelihoods p_j = e^(−d_j), not deficits: a level can lower it by at most 1.',
            'nothing to either: only the finest level counts':
                'Every level is upsampled to the image size and summed, in both maps.',
        },
    },
    '03.Q1': {  # Why is b_n computed from the normal fibers only?
        "right": 'so that the boundary does not depend on which anomaly types happened to be labelled',
        "why": {
            'there are too few anomalies to sort':
                'Sorting ten values is easy; the reason is what they would do to the boundary.',
            'so that the boundary does not depend on which anomaly types happened to be labelled':
                'Right: a boundary fitted to the seen types is placed for them, and an unseen type can fall on the wrong side.',
            'because anomalies have no log-likelihood':
                'Every fiber, normal or not, has a log-likelihood under the flow.',
            'to make the margin wider':
                'The margin is τ, whatever b_n is.',
        },
    },
    '03.Q2': {  # τ doubles from 0.1 to 0.2. What happens?
        "right": 'b_a moves down by 0.1; b_n stays',
        "why": {
            'b_n and b_a both move down by 0.1':
                'b_n depends on β and the normals only.',
            'b_a moves down by 0.1; b_n stays':
                'Right: b_a = b_n − τ, so only the anomaly boundary moves, and the margin doubles.',
            'b_n moves up by 0.1; b_a stays':
                'b_n does not depend on τ at all.',
            'nothing: τ only matters for the focal weights':
                'τ sets the margin of the push term: b_a = b_n − τ.',
        },
    },
    '03.Q3': {  # β = 0.01. What does that guarantee?
        "right": 'at most 1% of the training normal fibers lie below b_n',
        "why": {
            'a 1% false-positive rate on test images':
                'Image decisions use a threshold on image scores, a different quantity.',
            'a 1% false-positive rate on test fibers':
                'The test rate depends on how test normals compare with training normals; exercise 03.2 measures it.',
            'at most 1% of the training normal fibers lie below b_n':
                'Right: b_n is the β-quantile of the training normals; only those are controlled.',
            'that 99% of anomalies are detected':
                'β says nothing about anomalies.',
        },
    },
    '03.Q4': {  # Why is the per-batch b_n noisier with chunks of 256 fibers than with 4,096?
        "right": 'the β-quantile then rests on very few fibers (0.01 × 256 ≈ 2)',
        "why": {
            'smaller chunks have more anomalies':
                'The share of anomalies does not depend on the chunk size.',
            'the flow changes faster':
                'The flow is the same in this experiment; only the chunking changes.',
            'the β-quantile then rests on very few fibers (0.01 × 256 ≈ 2)':
                "Right: the quantile of a small sample scatters; with β = 0.01 it is nearly the chunk's minimum.",
            'compute_boundaries rounds differently':
                'The rule ⌊β·n⌋ is the same for every chunk size.',
        },
    },
    '04.Q1': {  # Which fibers does the pull term touch?
        "right": 'normal fibers with l ≤ b_n',
        "why": {
            'every normal fiber':
                'Normals above b_n are already where they should be; the ML term still acts on them, pull does not.',
            'normal fibers with l ≤ b_n':
                'Right: pull = mean over normal fibers with l ≤ b_n of (b_n − l).',
            'anomalous fibers with l ≥ b_a':
                'That is the push term.',
            'every fiber below b_n, normal or not':
                "Anomalies are never pulled: that is the 'semi' of semi-push-pull.",
        },
    },
    '04.Q2': {  # An anomalous fiber sits at l = b_a − 0.5. What does BG-SPP's push do to it?
        "right": 'nothing: it is already below b_a',
        "why": {
            'pushes it down with gradient 1':
                'Only anomalies at or above b_a are selected.',
            'pulls it up towards b_a':
                'BG-SPP never pulls anomalies.',
            'nothing: it is already below b_a':
                'Right: its push term is 0, so the model is not bent further towards this (seen) anomaly.',
            'pushes it down with a fading gradient':
                'That describes the naive push, −log σ(−l).',
        },
    },
    '04.Q3': {  # Why is the naive push's bias towards the seen types not stopped by its fading gr
        "right": 'it fades but stays positive, so training keeps fitting the seen anomalies, epoch after epoch',
        "why": {
            'the gradient is zero below b_a':
                'The naive push has no b_a at all.',
            'it fades but stays positive, so training keeps fitting the seen anomalies, epoch after epoch':
                'Right: σ(l) > 0 for every l; a smaller step, repeated every epoch, still moves the model towards the labelled types.',
            'the gradient grows as l falls':
                'd/dl of −log σ(−l) is σ(l), which shrinks as l falls.',
            'the naive push has no gradient':
                'Its gradient is σ(l), positive everywhere.',
        },
    },
    '04.Q4': {  # In a per-batch BGAD step, where do b_n and b_a come from?
        "right": 'from the normal fibers of this chunk',
        "why": {
            'from the whole training set after phase 1':
                "That is the library's fixed boundary (boundary='fixed'); the official code recomputes it per chunk.",
            'from the normal fibers of this chunk':
                "Right: compute_boundaries keeps the chunk's normal fibers and takes their β-quantile; b_a = b_n − τ.",
            'from all fibers of this chunk, anomalies included':
                'Anomalies would drag b_n towards themselves — the bias BGAD avoids.',
            'from the labelled anomalies':
                'The anomalies never set the boundary.',
        },
    },
    '05.Q1': {  # Why is the default threshold set on normal training images held out of training?
        "right": 'the model was fitted to the other training normals, which score too low; held-out ones score like new normals',
        "why": {
            'it maximises the test AUROC':
                'AUROC does not depend on any threshold.',
            'the model was fitted to the other training normals, which score too low; held-out ones score like new normals':
                'Right: no test label is used, and the held-out normals were never fitted, so the false alarms they predict are honest.',
            'it guarantees zero false alarms on the test set':
                'Test normals can score higher than every held-out normal; the FPR column shows whether they do.',
            'the paper prescribes it':
                'The paper reports threshold-free metrics; this is a practical choice.',
        },
    },
    '05.Q2': {  # The epoch slider replays phase 2 of BGAD. What should you see open up?
        "right": 'a gap between the normals above b_n and the anomalies pushed below b_a',
        "why": {
            'a gap between the normals above b_n and the anomalies pushed below b_a':
                'Right: pull keeps normals above b_n, push moves anomalies below b_a; the margin τ is the gap.',
            'the normals spreading out below b_a':
                'Normals below b_n are pulled up, not spread down.',
            'b_n moving far above every normal fiber':
                'b_n is a quantile of the normals: it stays inside their distribution.',
            'the seen anomalies pulled up into the normal distribution':
                'Anomalies are only ever pushed down.',
        },
    },
    '05.Q3': {  # An unseen-type defect is missed at the operating point. Which change helps *without*
        "right": "choose t as a lower quantile of the held-out normals' scores, accepting more false alarms",
        "why": {
            'lower t until the defect is flagged':
                'Lowering t for one known test image is tuning on the test set.',
            "choose t as a lower quantile of the held-out normals' scores, accepting more false alarms":
                'Right: a lower quantile of normals trades a known share of false alarms for sensitivity, decided before testing.',
            'retrain with this defect labelled':
                "That makes the type 'seen' and no longer measures the unseen case.",
            'raise β':
                'β places b_n for training; it does not change the image threshold.',
        },
    },
}
