"""The seed contract's section-8 example stage, pasted unchanged, for tests that plug it in
with ``SPARKLE_ADAPTER_IMAGES=contract_stage:stage_images``.

Only two things differ from the contract's text: the shot id is the one of
``tests/data/plans/rooftop.json`` (``shot_001`` instead of ``s1``), and the lines marked
``# added`` write the start and end frame files that the next stage (videos) reads.
"""

import io  # added
import time

from PIL import Image  # added

from sparkle.schemas import Checkpoint


def stage_images(movie_plan, asset_refs, run_dir):
    # generate or simulate frames, update asset_refs, write checkpoint
    asset_refs['shots']['shot_001']['start_frame'] = str(run_dir / 's1_start.png')
    for name, shade in (('s1_start.png', 40), ('s1_end.png', 220)):  # added
        buffer = io.BytesIO()  # added
        Image.new('RGB', (64, 36), (200, 120, shade)).save(buffer, format='PNG')  # added
        (run_dir / name).write_bytes(buffer.getvalue())  # added
    asset_refs['shots']['shot_001']['end_frame'] = str(run_dir / 's1_end.png')  # added
    checkpoint = Checkpoint(stage='images', status='success', timestamp=time.time())
    (run_dir / 'checkpoints').mkdir(parents=True, exist_ok=True)
    (run_dir / 'checkpoints' / 'images.json').write_text(checkpoint.json())
    return asset_refs
